//! `sessions keygen`: a new random key, printed as a line of a key file
//! (`keys_file`: one key a line, the first signs and seals).

pub(crate) fn run() -> anyhow::Result<()> {
    println!("{}", server_sessions::Keys::generate_line()?);
    Ok(())
}
