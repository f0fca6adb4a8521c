//! `tally`: the one binary. Each subcommand is a small module; services arrive as `run(config, shutdown)`.

mod stack;
mod webhook;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "tally", version, about = "Payments events → exactly-once ledger, archive and proof")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Debug PSP webhooks: verify signatures, normalise bodies.
    #[command(subcommand)]
    Webhook(webhook::WebhookCommand),
    /// Kafka topics Tally owns.
    #[command(subcommand)]
    Topics(stack::TopicsCommand),
    /// The local stack (PostgreSQL, Redis, Kafka-API broker).
    #[command(subcommand)]
    Stack(stack::StackCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Webhook(cmd) => webhook::run(cmd),
        Command::Topics(cmd) => stack::run_topics(cmd),
        Command::Stack(cmd) => stack::run_stack(cmd),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
