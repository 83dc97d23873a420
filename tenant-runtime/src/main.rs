//! `contact-runtime`: see [`contact_runtime::cli`].

fn main() -> std::process::ExitCode {
    contact_runtime::cli::main()
}
