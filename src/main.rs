//! The `t5edge` command line: a thin layer over the library.

fn main() {
    std::process::exit(t5edge::cli::main());
}
