//! `peers`: the command-line program (see the library for everything).

fn main() -> std::process::ExitCode {
    peers::main()
}
