//! `straitctl`: asks the local agent about the node and prints tables or JSON.

mod demo;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use strait_rpc::{DEFAULT_SOCKET, Passed, Request, Response, call};

#[derive(Parser)]
#[command(name = "straitctl", version, about = "Inspect and operate Strait")]
struct Args {
    /// The agent's socket.
    #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// The node: its networks, blocks and address usage.
    Status,
    /// The pod attachments on this node.
    Pods,
    /// The other nodes: address, VTEPs, blocks.
    Peers,
    /// The routes to other nodes' blocks, and whether each is in the kernel.
    Routes,
    /// Takes this node out of the cluster (its blocks, record and overlay) and stops its agent.
    Leave,
    /// A pod network on this one machine: nodes and pods as network namespaces.
    Demo {
        #[command(subcommand)]
        action: DemoAction,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum DemoMode {
    Vxlan,
    Routed,
}

#[derive(Subcommand)]
enum DemoAction {
    /// Builds the network and prints a measured connectivity matrix.
    Up {
        /// Nodes, each a namespace running its own straitd.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Pods on each node.
        #[arg(long, default_value_t = 2)]
        pods: usize,
        /// How pods reach other nodes.
        #[arg(long, value_enum, default_value_t = DemoMode::Vxlan)]
        mode: DemoMode,
    },
    /// Removes every trace of the demo.
    Down,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("straitctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let request = match args.command {
        Cmd::Status => Request::Status,
        Cmd::Pods => Request::Pods,
        Cmd::Peers => Request::Peers,
        Cmd::Routes => Request::Routes,
        Cmd::Leave => Request::Leave,
        Cmd::Demo {
            action: DemoAction::Up { nodes, pods, mode },
        } => {
            let mode = match mode {
                DemoMode::Vxlan => "vxlan",
                DemoMode::Routed => "routed",
            };
            return demo::up(nodes, pods, mode);
        }
        Cmd::Demo {
            action: DemoAction::Down,
        } => return demo::down(),
    };
    let response = call(
        &args.socket,
        &request,
        Passed::default(),
        Duration::from_secs(30),
    )
    .context("is straitd running on this node? (--socket selects another agent)")?;
    let json = args.output == Output::Json;
    match response {
        Response::Status(s) if json => print_json(&s),
        Response::Status(s) => print!("{}", table::status(&s)),
        Response::Pods(p) if json => print_json(&p),
        Response::Pods(p) => print!("{}", table::pods(&p)),
        Response::Peers(p) if json => print_json(&p),
        Response::Peers(p) => print!("{}", table::peers(&p)),
        Response::Routes(r) if json => print_json(&r),
        Response::Routes(r) => print!("{}", table::routes(&r)),
        Response::Left => println!("this node has left the cluster; its agent stops"),
        Response::Refused(why) => bail!("{why}"),
        Response::BadRequest(e) => bail!("the agent refused the request: {e}"),
        other => bail!("unexpected answer from the agent: {other:?}"),
    }
    Ok(())
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("answers serialize")
    );
}
