fn main() -> std::process::ExitCode {
    sd_augment::cli::main()
}
