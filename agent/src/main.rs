fn main() {
    println!("nodewall: CLI being written");
}
