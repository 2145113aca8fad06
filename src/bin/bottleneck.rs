fn main() -> std::process::ExitCode {
    sd_bottleneck::cli::main()
}
