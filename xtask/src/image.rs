//! `cargo xtask image-report ARCHIVE SBOM`: what `scripts/image.sh` built, read from its OCI
//! archive: digests, sizes (compressed as pushed, uncompressed as unpacked) with what makes them,
//! and a CycloneDX SBOM of the image written to SBOM: the Rust crates that cargo-auditable
//! embedded in each binary and the Debian packages of the base (their dpkg status files).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::str::FromStr;

use anyhow::{Context, bail};
use cyclonedx_bom::models::component::Classification;
use cyclonedx_bom::models::dependency::{Dependencies, Dependency};
use cyclonedx_bom::prelude::*;
use queue_server::testing::oci::OciImage;

/// The binaries the Dockerfile installs.
pub const BINARIES: [&str; 3] = ["queue-server", "producer", "consumer"];

/// Prints the report and writes the SBOM.
pub fn run(archive: &Path, sbom: &Path) -> anyhow::Result<()> {
    let image = OciImage::open(archive)?;
    let mb = |b: u64| b as f64 / 1_000_000.0;
    println!("image {}", archive.display());
    println!("  manifest digest  {}", image.manifest_digest);
    println!("  image id         {}", image.config_digest);
    println!(
        "  created          {}",
        image.config["created"].as_str().unwrap_or("-")
    );
    println!(
        "  size             {:.1} MB compressed (as pushed), {:.1} MB uncompressed",
        mb(image.compressed_size()),
        mb(image.uncompressed_size())
    );
    for layer in &image.layers {
        let step: String = layer
            .created_by
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let step: String = step.chars().take(70).collect();
        println!(
            "    layer {:>6.1} MB compressed {:>6.1} MB  {}",
            mb(layer.compressed),
            mb(layer.uncompressed),
            step
        );
    }
    for name in BINARIES {
        let path = format!("usr/local/bin/{name}");
        let entry = image
            .files
            .get(&path)
            .with_context(|| format!("/{path} is not in the image"))?;
        println!("    /{path}: {:.1} MB", mb(entry.size));
    }

    let bom = sbom_of(&image)?;
    let components = bom.components.as_ref().map(|c| c.0.len()).unwrap_or(0);
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out)
        .context("write the SBOM as JSON")?;
    out.push(b'\n');
    let part = sbom.with_extension("part");
    std::fs::write(&part, &out).with_context(|| format!("write {}", part.display()))?;
    std::fs::rename(&part, sbom)?;
    println!(
        "  SBOM             {} (CycloneDX 1.5, {components} components)",
        sbom.display()
    );
    Ok(())
}

/// One package seen in the image, by its purl.
struct Found {
    classification: Classification,
    name: String,
    version: String,
    depends: BTreeSet<String>,
}

/// The image's SBOM: the image as the described component, the three binaries, the crates in
/// them and the Debian packages, each once (by purl), with who depends on what.
pub fn sbom_of(image: &OciImage) -> anyhow::Result<Bom> {
    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut top = BTreeSet::new();
    for name in BINARIES {
        let bytes = image.read_file(&format!("usr/local/bin/{name}"))?;
        // The decompressed list of a binary with a few hundred crates is tens of kilobytes.
        let info = auditable_info::audit_info_from_slice(&bytes, 8 << 20).with_context(|| {
            format!("/usr/local/bin/{name} carries no cargo-auditable dependency list")
        })?;
        let refs: Vec<String> = info
            .packages
            .iter()
            .map(|p| {
                if p.root {
                    format!("binary:{name}")
                } else {
                    cargo_purl(p)
                }
            })
            .collect();
        for (package, reference) in info.packages.iter().zip(&refs) {
            let entry = found.entry(reference.clone()).or_insert_with(|| Found {
                classification: if package.root {
                    Classification::Application
                } else {
                    Classification::Library
                },
                name: package.name.clone(),
                version: package.version.to_string(),
                depends: BTreeSet::new(),
            });
            entry
                .depends
                .extend(package.dependencies.iter().map(|i| refs[*i].clone()));
            if package.root {
                top.insert(reference.clone());
            }
        }
    }
    for (path, _) in image.files.range("var/lib/dpkg/status.d/".to_owned()..) {
        if !path.starts_with("var/lib/dpkg/status.d/") {
            break;
        }
        let text = String::from_utf8(image.read_file(path)?)?;
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
                .map(str::to_owned)
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            bail!("{path}: no Package or Version field");
        };
        let arch = field("Architecture").unwrap_or_else(|| "all".to_owned());
        let reference = format!("pkg:deb/debian/{name}@{version}?arch={arch}&distro=debian-12");
        top.insert(reference.clone());
        found.insert(
            reference,
            Found {
                classification: Classification::Library,
                name,
                version,
                depends: BTreeSet::new(),
            },
        );
    }

    let version = image
        .label("org.opencontainers.image.version")
        .unwrap_or("unknown");
    let title = image
        .label("org.opencontainers.image.title")
        .unwrap_or("memq-rs");
    let image_ref = format!(
        "pkg:oci/{title}@{}?tag={version}",
        image.manifest_digest.replace(':', "%3A")
    );
    let mut described = Component::new(
        Classification::Container,
        title,
        version,
        Some(image_ref.clone()),
    );
    described.purl = Some(purl(&image_ref)?);
    let mut components = Vec::new();
    let mut dependencies = vec![Dependency {
        dependency_ref: image_ref,
        dependencies: top.into_iter().collect(),
    }];
    for (reference, f) in found {
        let mut component = Component::new(
            f.classification,
            &f.name,
            &f.version,
            Some(reference.clone()),
        );
        if !reference.starts_with("binary:") {
            component.purl = Some(purl(&reference)?);
        }
        components.push(component);
        dependencies.push(Dependency {
            dependency_ref: reference,
            dependencies: f.depends.into_iter().collect(),
        });
    }
    let bom = Bom {
        // No serial number or timestamp: the same image gives the same SBOM.
        serial_number: None,
        spec_version: SpecVersion::V1_5,
        metadata: Some(Metadata {
            component: Some(described),
            ..Default::default()
        }),
        components: Some(Components(components)),
        dependencies: Some(Dependencies(dependencies)),
        ..Default::default()
    };
    let result = bom.validate_version(SpecVersion::V1_5);
    if !result.passed() {
        bail!("the SBOM does not validate as CycloneDX 1.5: {result:?}");
    }
    Ok(bom)
}

/// `text` as a package URL.
fn purl(text: &str) -> anyhow::Result<Purl> {
    Purl::from_str(text).map_err(|()| anyhow::anyhow!("not a package URL: {text}"))
}

/// The purl of a crate, as cargo-auditable tells its source.
fn cargo_purl(package: &auditable_serde::Package) -> String {
    let qualifier = match &package.source {
        auditable_serde::Source::CratesIo => "",
        auditable_serde::Source::Local => "?download_url=local",
        auditable_serde::Source::Git => "?vcs_url=git",
        _ => "?repository_url=other",
    };
    format!("pkg:cargo/{}@{}{qualifier}", package.name, package.version)
}
