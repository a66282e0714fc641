//! The `moat` binary: a thin wrapper around [`moat_server::cli`].

fn main() -> std::process::ExitCode {
    moat_server::cli::main()
}
