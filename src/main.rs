//! The `apura` binary: parse the command line, start tracing, run one component.

fn main() {
    println!("apura");
}
