//! `palisade certs generate`: a CA and a serving certificate for the webhook Service.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::tls::certificates::{self, CertSpec};

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Write a CA and a serving certificate for the webhook Service, and print the caBundle.
    Generate(GenerateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Name of the webhook's Service.
    #[arg(long, default_value = "palisade")]
    pub service: String,
    /// Namespace of the webhook's Service.
    #[arg(long, default_value = "palisade-system")]
    pub namespace: String,
    /// Directory to write ca.crt, ca.key, tls.crt and tls.key into.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Validity of the CA, in days.
    #[arg(long, default_value_t = 3650)]
    pub ca_days: u32,
    /// Validity of the serving certificate, in days.
    #[arg(long, default_value_t = 365)]
    pub cert_days: u32,
    /// Additional DNS names or IP addresses for the serving certificate.
    #[arg(long = "extra-san")]
    pub extra_sans: Vec<String>,
    /// Replace an existing CA (every webhook configuration's caBundle must then be updated).
    #[arg(long)]
    pub force: bool,
}

impl CertsCommand {
    pub(crate) fn run(self) -> anyhow::Result<ExitCode> {
        let CertsCommand::Generate(args) = self;
        let spec = CertSpec {
            service: args.service,
            namespace: args.namespace,
            extra_sans: args.extra_sans,
            ca_days: args.ca_days,
            cert_days: args.cert_days,
        };
        let generated = certificates::generate_into(&args.out, &spec, args.force)?;
        eprintln!(
            "wrote {dir}/ca.crt, {dir}/ca.key, {dir}/tls.crt and {dir}/tls.key for {sans}",
            dir = args.out.display(),
            sans = spec.sans().join(", ")
        );
        eprintln!("caBundle for the webhook configurations:");
        println!("{}", generated.ca_bundle());
        Ok(ExitCode::SUCCESS)
    }
}
