use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = palisade::cli::Cli::parse();
    palisade::cli::init_tracing();
    match palisade::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
