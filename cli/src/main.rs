//! The shipped `comfyrs` binary: the library's CLI with the built-in nodes and every pack under
//! `nodes/`. A distribution with other packs is the same two lines with its own list.

fn main() -> std::process::ExitCode {
    comfyrs::cli::main_with(comfyrs_cli::PACKS)
}
