//! A container image read from an OCI archive (the `oci-archive` that `scripts/image.sh`
//! writes): its manifest digest, config, layer sizes and the files of its root filesystem as a
//! container sees them (layers applied in order, whiteouts honoured), without a container engine.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use serde_json::Value;

/// One layer of the image.
#[derive(Debug, Clone)]
pub struct Layer {
    /// `sha256:...` of the blob as stored (compressed).
    pub digest: String,
    /// Bytes stored in the archive (and pushed to a registry).
    pub compressed: u64,
    /// Bytes of the layer's tar stream once decompressed.
    pub uncompressed: u64,
}

/// What a path of the root filesystem is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (or a hard link to one).
    File,
    /// A directory.
    Dir,
    /// A symbolic link to the target.
    Symlink(String),
    /// A device, FIFO or other special file.
    Other,
}

/// A path of the root filesystem with its metadata, from the top-most layer that holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// Permission bits (and set-id bits).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Size in bytes of a regular file.
    pub size: u64,
    /// Index in [`OciImage::layers`] of the layer it comes from.
    pub layer: usize,
}

/// An image read from an OCI archive.
pub struct OciImage {
    /// `sha256:...` of the image manifest: what `podman images --digests` and registries show.
    pub manifest_digest: String,
    /// `sha256:...` of the config blob: the image ID.
    pub config_digest: String,
    /// The manifest's annotations (an empty object when it has none).
    pub annotations: Value,
    /// The image config (`config`, `history`, `created`, ...).
    pub config: Value,
    /// Bytes of the manifest and config blobs.
    pub metadata_bytes: u64,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    /// Every path of the root filesystem (no leading `/`), in order.
    pub files: BTreeMap<String, Entry>,
    blobs: HashMap<String, Vec<u8>>,
    layer_media_types: Vec<String>,
}

impl OciImage {
    /// Reads the archive at `path`: the first image of its index.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let mut blobs = HashMap::new();
        for entry in archive.entries().context("read the archive")? {
            let mut entry = entry.context("read the archive")?;
            let name = entry
                .path()?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes)?;
            blobs.insert(name, bytes);
        }
        let blob = |digest: &str| -> anyhow::Result<&Vec<u8>> {
            let (algorithm, hex) = digest.split_once(':').context("a digest has a colon")?;
            blobs
                .get(&format!("blobs/{algorithm}/{hex}"))
                .with_context(|| format!("blob {digest} is not in the archive"))
        };
        let index: Value = serde_json::from_slice(
            blobs
                .get("index.json")
                .context("no index.json: not an OCI archive")?,
        )?;
        let manifest_digest = index["manifests"][0]["digest"]
            .as_str()
            .context("the index names no manifest")?
            .to_owned();
        let manifest: Value = serde_json::from_slice(blob(&manifest_digest)?)?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .context("the manifest names no config")?
            .to_owned();
        let annotations = manifest
            .get("annotations")
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default()));
        let config_blob = blob(&config_digest)?;
        let config: Value = serde_json::from_slice(config_blob)?;
        let metadata_bytes = (blob(&manifest_digest)?.len() + config_blob.len()) as u64;
        let mut layers = Vec::new();
        let mut layer_media_types = Vec::new();
        for layer in manifest["layers"].as_array().context("no layers")? {
            let digest = layer["digest"]
                .as_str()
                .context("a layer without digest")?
                .to_owned();
            let media_type = layer["mediaType"].as_str().unwrap_or_default().to_owned();
            let compressed = blob(&digest)?.len() as u64;
            layers.push(Layer {
                digest,
                compressed,
                uncompressed: 0,
            });
            layer_media_types.push(media_type);
        }
        let mut image = OciImage {
            manifest_digest,
            config_digest,
            annotations,
            config,
            metadata_bytes,
            layers,
            files: BTreeMap::new(),
            blobs,
            layer_media_types,
        };
        image.apply_layers()?;
        Ok(image)
    }

    /// The decompressed tar stream of layer `i`.
    fn layer_reader(&self, i: usize) -> anyhow::Result<Box<dyn Read + '_>> {
        let digest = &self.layers[i].digest;
        let (algorithm, hex) = digest.split_once(':').context("a digest has a colon")?;
        let bytes = &self.blobs[&format!("blobs/{algorithm}/{hex}")];
        let media_type = &self.layer_media_types[i];
        Ok(
            if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
                Box::new(flate2::read::GzDecoder::new(&bytes[..]))
            } else if media_type.ends_with(".tar") || media_type.ends_with("layer.v1.tar") {
                Box::new(&bytes[..])
            } else {
                bail!("layer {digest}: media type {media_type} is not read here")
            },
        )
    }

    /// Applies the layers bottom to top into [`OciImage::files`], counting their sizes.
    fn apply_layers(&mut self) -> anyhow::Result<()> {
        let mut files = BTreeMap::new();
        for i in 0..self.layers.len() {
            let mut counted = CountingReader {
                inner: self.layer_reader(i)?,
                count: 0,
            };
            let mut added: Vec<(String, Entry)> = Vec::new();
            let mut whiteouts: Vec<String> = Vec::new();
            let mut opaque: Vec<String> = Vec::new();
            {
                let mut archive = tar::Archive::new(&mut counted);
                for entry in archive.entries()? {
                    let entry = entry?;
                    let path = normalize(&entry.path()?.to_string_lossy());
                    let (dir, base) = match path.rsplit_once('/') {
                        Some((dir, base)) => (format!("{dir}/"), base.to_owned()),
                        None => (String::new(), path.clone()),
                    };
                    if base == ".wh..wh..opq" {
                        opaque.push(dir);
                        continue;
                    }
                    if let Some(hidden) = base.strip_prefix(".wh.") {
                        whiteouts.push(format!("{dir}{hidden}"));
                        continue;
                    }
                    let header = entry.header();
                    let kind = match header.entry_type() {
                        tar::EntryType::Directory => Kind::Dir,
                        tar::EntryType::Symlink => Kind::Symlink(
                            entry
                                .link_name()?
                                .map(|l| l.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                        ),
                        tar::EntryType::Regular
                        | tar::EntryType::Link
                        | tar::EntryType::Continuous => Kind::File,
                        _ => Kind::Other,
                    };
                    let size = if header.entry_type() == tar::EntryType::Link {
                        let target = normalize(
                            &entry
                                .link_name()?
                                .map(|l| l.to_string_lossy().into_owned())
                                .unwrap_or_default(),
                        );
                        added
                            .iter()
                            .rev()
                            .find(|(p, _)| *p == target)
                            .map(|(_, e)| e.size)
                            .or_else(|| files.get(&target).map(|e: &Entry| e.size))
                            .unwrap_or(0)
                    } else {
                        header.size()?
                    };
                    added.push((
                        path,
                        Entry {
                            kind,
                            mode: header.mode()? & 0o7777,
                            uid: header.uid()?,
                            gid: header.gid()?,
                            size,
                            layer: i,
                        },
                    ));
                }
            }
            std::io::copy(&mut counted, &mut std::io::sink())?;
            let count = counted.count;
            drop(counted);
            self.layers[i].uncompressed = count;
            // Whiteouts and opaque directories hide what the layers below hold.
            for hidden in whiteouts {
                let below = format!("{hidden}/");
                files.retain(|p: &String, _| *p != hidden && !p.starts_with(&below));
            }
            for dir in opaque {
                files.retain(|p: &String, _| !p.starts_with(&dir));
            }
            for (path, entry) in added {
                if path.is_empty() {
                    continue;
                }
                files.insert(path, entry);
            }
        }
        self.files = files;
        Ok(())
    }

    /// The contents of the regular file at `path` (no leading `/`; links followed).
    pub fn read_file(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let path = self
            .resolve(path)
            .with_context(|| format!("{path} is not in the image"))?;
        let entry = &self.files[&path];
        if entry.kind != Kind::File {
            bail!("{path} is not a regular file");
        }
        let mut archive = tar::Archive::new(self.layer_reader(entry.layer)?);
        for item in archive.entries()? {
            let mut item = item?;
            let name = normalize(&item.path()?.to_string_lossy());
            if name != path {
                continue;
            }
            if item.header().entry_type() == tar::EntryType::Link {
                let target = item
                    .link_name()?
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default();
                return self.read_file(&normalize(&target));
            }
            let mut bytes = Vec::new();
            item.read_to_end(&mut bytes)?;
            return Ok(bytes);
        }
        bail!("{path}: not found in its layer")
    }

    /// `path` with every symbolic link on the way followed, if it exists.
    pub fn resolve(&self, path: &str) -> Option<String> {
        let mut resolved = String::new();
        let mut parts: Vec<String> = normalize(path)
            .split('/')
            .rev()
            .map(str::to_owned)
            .collect();
        let mut hops = 0;
        while let Some(part) = parts.pop() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved = resolved
                        .rsplit_once('/')
                        .map(|(d, _)| d.to_owned())
                        .unwrap_or_default();
                    continue;
                }
                _ => {}
            }
            let candidate = if resolved.is_empty() {
                part.clone()
            } else {
                format!("{resolved}/{part}")
            };
            match &self.files.get(&candidate)?.kind {
                Kind::Symlink(target) => {
                    hops += 1;
                    if hops > 40 {
                        return None;
                    }
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    parts.extend(target.split('/').rev().map(str::to_owned));
                }
                _ => resolved = candidate,
            }
        }
        Some(resolved)
    }

    /// Bytes of all layers as stored (compressed), plus the manifest and config.
    pub fn compressed_size(&self) -> u64 {
        self.metadata_bytes + self.layers.iter().map(|l| l.compressed).sum::<u64>()
    }

    /// Bytes of all layers decompressed.
    pub fn uncompressed_size(&self) -> u64 {
        self.layers.iter().map(|l| l.uncompressed).sum()
    }

    /// A string field of the image config's `config` (`User`, `WorkingDir`).
    pub fn config_str(&self, field: &str) -> Option<&str> {
        self.config["config"][field].as_str()
    }

    /// A label of the image.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.config["config"]["Labels"][name].as_str()
    }
}

/// A layer path without `./`, leading or trailing `/`.
fn normalize(path: &str) -> String {
    path.trim_start_matches("./").trim_matches('/').to_owned()
}

/// Counts the bytes read through it.
struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}
