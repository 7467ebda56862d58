//! Prints the CustomResourceDefinitions as YAML.
//! `cargo run -p truffles-crds --bin crdgen > crds/truffles.kz_crds.yaml`

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    print!("{}", truffles_crds::crds_yaml()?);
    Ok(())
}
