fn main() -> std::process::ExitCode {
    sd_finetune::cli::main()
}
