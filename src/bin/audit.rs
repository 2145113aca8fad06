fn main() -> std::process::ExitCode {
    sd_cli::main(sd_audit::cli::run)
}
