fn main() -> std::process::ExitCode {
    sd_pipeline::split::main()
}
