//! `palisade netpol explain` and `palisade netpol query`, on the model admission judges with
//! (see [`crate::netpol`]).

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

use super::args::Output;
use super::args::read_inputs;
use crate::netpol::ip::{Cidr, IpSet};
use crate::netpol::model::Labels;
use crate::netpol::{self, Endpoint, Protocol, Side, World, explain, graph};

/// More namespaces than this, with no filter, are summarised one line each.
const DETAIL_NAMESPACES: usize = 20;

#[derive(Debug, Subcommand)]
pub enum NetpolCommand {
    /// Print what each pod (when the input holds Pods) or each set of pods may receive (in) and
    /// send (out): from and to which peers, on which ports, and the rule that allows it.
    Explain(ExplainArgs),
    /// Answer whether one endpoint may reach another on a port, and which policies decide it.
    /// Exits 0 when allowed, 1 when denied, 2 on bad input.
    Query(QueryArgs),
    /// Print the flows a change of manifests adds and removes (--base against --head), per set
    /// of pods, and what it opens that a communication matrix forbids. Exits 0 when nothing
    /// breaks a matrix, 1 when something does, 2 on bad input.
    Diff(super::netpol_diff::DiffArgs),
}

impl NetpolCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            NetpolCommand::Explain(args) => args.run(),
            NetpolCommand::Query(args) => Ok(args.run()),
            NetpolCommand::Diff(args) => Ok(args.run()),
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// NetworkPolicies, and the Namespaces and Pods they apply to: a file, a directory, or -
    /// for standard input (repeatable). Other kinds are ignored.
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// The namespaces to explain (repeatable); default: every namespace with a policy or a pod.
    #[arg(short = 'n', long = "namespace")]
    pub namespaces: Vec<String>,
    /// Only this pod, NAMESPACE/NAME (its Pod must be in the input).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only the set of pods a pod with these labels is in: key=value,key=value.
    #[arg(short = 'l', long)]
    pub labels: Option<String>,
    /// Files or directories holding PalisadeCommunicationMatrix constraints (repeatable; those
    /// among the -f inputs are read too): the flows they forbid are listed, and drawn in red.
    #[arg(long)]
    pub matrix: Vec<String>,
    /// How the result is printed.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub format: ExplainFormat,
}

/// `netpol explain -o`: the shared text and JSON, and the two pictures only `explain` draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// A table per namespace.
    Text,
    /// `{"namespaces": [...]}`.
    Json,
    /// A Graphviz graph (`dot -Tsvg` draws it).
    Dot,
    /// A Mermaid flowchart (GitHub draws a ```mermaid block).
    Mermaid,
}

impl ExplainArgs {
    fn run(self) -> anyhow::Result<ExitCode> {
        let docs = read_inputs(&self.inputs).map_err(anyhow::Error::msg)?;
        let world = World::read(&docs).map_err(anyhow::Error::msg)?;
        if world.policies.is_empty() && world.pods.is_empty() {
            anyhow::bail!(
                "no NetworkPolicy (networking.k8s.io/v1) or Pod in {}: give the files that hold them with -f",
                self.inputs.join(", ")
            );
        }
        let labels = match &self.labels {
            None => None,
            Some(text) => Some(parse_labels(text).map_err(anyhow::Error::msg)?),
        };
        if let Some(pod) = &self.pod
            && !pod.contains('/')
        {
            anyhow::bail!("--pod {pod:?}: write NAMESPACE/NAME");
        }
        let filter = explain::Filter {
            namespaces: self.namespaces.clone(),
            pod: self.pod.clone(),
            labels,
        };
        let explained = explain::explain(&world, &filter);
        let mut matrix_docs = docs.clone();
        if !self.matrix.is_empty() {
            matrix_docs.extend(read_inputs(&self.matrix).map_err(anyhow::Error::msg)?);
        }
        let matrices = super::netpol_diff::matrices(&matrix_docs).map_err(anyhow::Error::msg)?;
        if !self.matrix.is_empty() && matrices.is_empty() {
            anyhow::bail!(
                "--matrix {}: no {} constraint there",
                self.matrix.join(", "),
                netpol::matrix::KIND
            );
        }
        let judged = (!matrices.is_empty()).then(|| self.judge(&world, &matrices));
        let filtered = !self.namespaces.is_empty() || self.pod.is_some() || self.labels.is_some();
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let written = match self.format {
            ExplainFormat::Text => explain::write_text(
                &mut out,
                &explained,
                !filtered && explained.len() > DETAIL_NAMESPACES,
            )
            .and_then(|()| match &judged {
                None => Ok(()),
                Some(j) => {
                    writeln!(out, "communication matrices")?;
                    if j.breaches.is_empty() && j.blocked.is_empty() {
                        writeln!(
                            out,
                            "  every flow is allowed, and every required flow gets through"
                        )?;
                    }
                    for b in &j.breaches {
                        writeln!(out, "  forbidden: {}", b.message())?;
                    }
                    for b in &j.blocked {
                        writeln!(out, "  blocked: {}", b.message())?;
                    }
                    Ok(())
                }
            }),
            ExplainFormat::Json => {
                let mut v = serde_json::json!({"namespaces": explained});
                if let Some(j) = &judged {
                    v["matrices"] = serde_json::json!({
                        "forbidden": j.breaches.iter().map(netpol::matrix::Breach::json).collect::<Vec<_>>(),
                        "blocked": j.blocked.iter().map(netpol::matrix::Blocked::json).collect::<Vec<_>>(),
                    });
                }
                serde_json::to_writer_pretty(&mut out, &v)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            }
            // Pictures are never summarised: -n, --pod and -l draw less. Judged against a
            // matrix, the picture is of the flows themselves, with the forbidden ones marked.
            ExplainFormat::Dot => write!(
                out,
                "{}",
                match &judged {
                    Some(j) => j.graph.to_dot(),
                    None => graph::from_explanations(&explained).to_dot(),
                }
            ),
            ExplainFormat::Mermaid => write!(
                out,
                "{}",
                match &judged {
                    Some(j) => j.graph.to_mermaid(),
                    None => graph::from_explanations(&explained).to_mermaid(),
                }
            ),
        };
        match written.and_then(|()| out.flush()) {
            Ok(()) => Ok(ExitCode::SUCCESS),
            // A reader that has seen enough (`| head`) is not an error.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
            Err(e) => Err(e.into()),
        }
    }
}

/// What the matrices say of the input, and the picture of its flows with the forbidden ones.
struct Judged {
    breaches: Vec<netpol::matrix::Breach>,
    blocked: Vec<netpol::matrix::Blocked>,
    graph: graph::Graph,
}

impl ExplainArgs {
    fn judge(&self, world: &World, matrices: &[netpol::matrix::Matrix]) -> Judged {
        use netpol::flows::{Flows, Net};
        let universe = netpol::Universe::default();
        let net = Net::of_world(world, &universe);
        let wanted =
            |ns: &str| self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == ns);
        let mut breaches = Vec::new();
        let mut blocked = Vec::new();
        for m in matrices {
            let found = netpol::matrix::audit(m, &net, None);
            breaches.extend(found.forbidden.into_iter().filter(|b| wanted(&b.namespace)));
            blocked.extend(
                found
                    .blocked
                    .into_iter()
                    .filter(|b| b.namespaces.iter().any(|n| wanted(n))),
            );
        }
        let nets = [&net];
        let refine = netpol::matrix::Matrices(matrices);
        let names: Vec<String> = net
            .namespaces()
            .map(|s| s.name)
            .filter(|n| wanted(n))
            .collect();
        let (flows, errors) = Flows::new(&nets, &refine)
            .uniform()
            .across(names.iter().map(String::as_str), None);
        // A namespace left out of the picture says why.
        for e in &errors {
            eprintln!("warning: not drawn: {e}");
        }
        let all: Vec<_> = flows.iter().filter(|f| !f.ports(0).is_empty()).collect();
        let ports: Vec<netpol::flows::PortSet> = all.iter().map(|f| f.ports(0)).collect();
        let edges: Vec<_> = all
            .iter()
            .zip(&ports)
            .map(|(f, p)| (&f.from, &f.to, p, graph::EdgeStyle::Allowed))
            .collect();
        let mut g = graph::from_flows(&edges);
        g.forbid(&breaches);
        Judged {
            breaches,
            blocked,
            graph: g,
        }
    }
}

fn parse_labels(text: &str) -> Result<Labels, String> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("--labels: {kv:?} is not key=value"))
        })
        .collect()
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// NetworkPolicies, Namespaces and the Pods named: files, directories or - (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    pub inputs: Vec<String>,
    /// The source: NAMESPACE/POD (a Pod of the input), an IP address or a CIDR.
    #[arg(long)]
    pub from: String,
    /// The destination: NAMESPACE/POD, an IP address or a CIDR.
    #[arg(long)]
    pub to: String,
    /// PORT or PORT/PROTOCOL (TCP, UDP, SCTP; TCP by default).
    #[arg(long)]
    pub port: String,
    #[command(flatten)]
    pub output: Output,
}

/// An endpoint as given: a pod, or every address of a CIDR.
enum Given<'a> {
    Pod(&'a netpol::Pod),
    Addresses(String, IpSet),
}

impl QueryArgs {
    fn run(self) -> ExitCode {
        match self.answer() {
            Ok((allowed, text)) => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{text}");
                if allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        }
    }

    fn answer(&self) -> Result<(bool, String), String> {
        let docs = read_inputs(&self.inputs)?;
        let world = World::read(&docs)?;
        let (port, protocol) =
            Protocol::parse_port(&self.port).map_err(|e| format!("--port {e}"))?;
        let from = endpoint(&world, &self.from, "--from")?;
        let to = endpoint(&world, &self.to, "--to")?;
        // A CIDR is answered for each piece the policies treat alike: allowed only when every
        // address of it is.
        let samples = |g: &Given| -> Vec<(String, Option<usize>, Option<IpAddr>)> {
            match g {
                Given::Pod(_) => vec![(String::new(), Some(0), None)],
                Given::Addresses(_, set) => pieces(&world, set)
                    .into_iter()
                    .map(|(text, ip)| (text, None, Some(ip)))
                    .collect(),
            }
        };
        let mut verdicts = Vec::new();
        for (from_text, _, from_ip) in samples(&from) {
            for (to_text, _, to_ip) in samples(&to) {
                let a = match (&from, from_ip) {
                    (Given::Pod(p), _) => Endpoint::Pod(p),
                    (_, Some(ip)) => Endpoint::Address(ip),
                    _ => continue,
                };
                let b = match (&to, to_ip) {
                    (Given::Pod(p), _) => Endpoint::Pod(p),
                    (_, Some(ip)) => Endpoint::Address(ip),
                    _ => continue,
                };
                let answer = netpol::query(&world, a, b, port, protocol);
                verdicts.push((from_text.clone(), to_text.clone(), answer));
            }
        }
        let allowed = verdicts.iter().all(|(_, _, a)| a.allowed());
        let name = |g: &Given| match g {
            Given::Pod(p) => p.id(),
            Given::Addresses(text, _) => text.clone(),
        };
        let mut text = String::new();
        let head = if allowed { "allowed" } else { "denied" };
        text.push_str(&format!(
            "{head}: {} -> {} on {port}/{}\n",
            name(&from),
            name(&to),
            protocol.name()
        ));
        let many = verdicts.len() > 1;
        for (f, t, answer) in &verdicts {
            if many {
                let f = if f.is_empty() { name(&from) } else { f.clone() };
                let t = if t.is_empty() { name(&to) } else { t.clone() };
                let verdict = if answer.allowed() {
                    "allowed"
                } else {
                    "denied"
                };
                text.push_str(&format!("  {f} -> {t}: {verdict}\n"));
            }
            let indent = if many { "    " } else { "  " };
            if answer.loopback {
                text.push_str(&format!("{indent}a pod may always reach itself\n"));
                continue;
            }
            for (what, side) in [
                ("egress from the source", &answer.egress),
                ("ingress to the destination", &answer.ingress),
            ] {
                let line = match side {
                    Side::Outside => continue,
                    Side::Open => format!("{what}: no policy isolates it"),
                    Side::Allowed(rules) => format!(
                        "{what}: allowed by {}",
                        rules
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Side::Denied(policies) => format!(
                        "{what}: denied: isolated by {} and no rule of {} allows it",
                        policies.join(", "),
                        if policies.len() == 1 { "it" } else { "them" }
                    ),
                };
                text.push_str(&format!("{indent}{line}\n"));
            }
        }
        Ok((allowed, text))
    }
}

fn endpoint<'a>(world: &'a World, text: &str, flag: &str) -> Result<Given<'a>, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        let cidr = match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        };
        let set = IpSet::of(Cidr::parse(&cidr)?);
        return Ok(Given::Addresses(text.to_owned(), set));
    }
    if let Ok(c) = Cidr::parse(text) {
        return Ok(Given::Addresses(text.to_owned(), IpSet::of(c)));
    }
    let Some((ns, name)) = text.split_once('/') else {
        return Err(format!(
            "{flag} {text:?}: write NAMESPACE/POD, an IP address or a CIDR"
        ));
    };
    world.pod(&format!("{ns}/{name}")).map(Given::Pod).ok_or_else(|| {
        format!("{flag} {text:?}: no Pod {name} in namespace {ns} in the input; give its manifest with -f")
    })
}

/// The pieces of `set` that every ipBlock of the input treats alike, each with one address.
fn pieces(world: &World, set: &IpSet) -> Vec<(String, IpAddr)> {
    let mut cuts = Vec::new();
    set.cuts(&mut cuts);
    for p in &world.policies {
        for d in netpol::Direction::BOTH {
            for r in p.rules(d).unwrap_or_default() {
                r.reach.cuts(&mut cuts);
            }
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    let mut out = Vec::new();
    for (n, &(family, first)) in cuts.iter().enumerate() {
        let last = match cuts.get(n + 1) {
            Some(&(f, next)) if f == family => next - 1,
            _ => IpSet::max_of(family),
        };
        let piece = IpSet::range(family, first, last);
        if !set.contains(&piece) {
            continue;
        }
        let Some((addr, _)) = piece.ranges_of(family).next() else {
            continue;
        };
        let cidrs = piece.cidrs();
        let text = if cidrs.len() > 2 {
            format!(
                "{} .. {} ({} ranges)",
                cidrs[0],
                cidrs[cidrs.len() - 1],
                cidrs.len()
            )
        } else {
            cidrs.join(", ")
        };
        out.push((text, addr));
    }
    out
}
