fn main() -> std::process::ExitCode {
    wasmbatch::main()
}
