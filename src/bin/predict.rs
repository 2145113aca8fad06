fn main() -> std::process::ExitCode {
    sd_predict::cli::main()
}
