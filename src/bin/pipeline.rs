fn main() -> std::process::ExitCode {
    sd_pipeline::cli::main()
}
