//! Bench suite `profile` (not implemented yet).

pub fn run(_args: &crate::Args) -> Result<(), Box<dyn std::error::Error>> {
    println!("suite profile: not implemented yet");
    Ok(())
}
