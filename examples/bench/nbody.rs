//! Bench suite `nbody` (not implemented yet).

pub fn run(_args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("suite nbody: not implemented yet");
    Ok(())
}
