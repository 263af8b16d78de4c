fn main() -> std::process::ExitCode {
    vmflow::cli::main()
}
