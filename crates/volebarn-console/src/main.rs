//! `volebarn`: the console app that keeps a local folder in sync with a Volebarn server and
//! doubles as a command line for it. Everything lives in the library; this only runs it.

fn main() -> std::process::ExitCode {
    volebarn_console::main()
}
