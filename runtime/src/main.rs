fn main() -> std::process::ExitCode {
    wasmbatch::cli::main()
}
