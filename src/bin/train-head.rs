fn main() -> std::process::ExitCode {
    sd_head::cli::main()
}
