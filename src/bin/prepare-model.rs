fn main() -> std::process::ExitCode {
    sd_model::cli::main()
}
