//! Image folders (PNG/JPEG) as a sample source, with the preprocessing camera models expect.
//!
//! Preprocessing, in order: decode; convert to RGB or grayscale; resize to `height x width` with
//! bilinear filtering (skipped when the image already has that size); scale each 8-bit value by
//! `scale` (default 1/255, giving [0, 1]); per channel `(v - mean[c]) / std[c]`; lay out as
//! `[C, H, W]` (NCHW batches) or `[H, W, C]` (NHWC batches). Output is always f32.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// Colour handling of decoded images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorMode {
    #[default]
    Rgb,
    Gray,
}

impl ColorMode {
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Rgb => 3,
            ColorMode::Gray => 1,
        }
    }
}

/// Memory layout of image batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// How images become tensors. See the module docs for the order of the steps.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageOptions {
    /// Target height and width; 0 keeps the first image's size (then all must share it).
    pub height: usize,
    pub width: usize,
    pub color: ColorMode,
    pub layout: Layout,
    /// Multiplies the 8-bit values (1/255 maps them to [0, 1]).
    pub scale: f32,
    /// Per-channel mean and standard deviation, one value (applied to all channels) or one per
    /// channel; empty means 0 and 1.
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Default for ImageOptions {
    fn default() -> Self {
        ImageOptions {
            height: 0,
            width: 0,
            color: ColorMode::Rgb,
            layout: Layout::Nchw,
            scale: 1.0 / 255.0,
            mean: vec![],
            std: vec![],
        }
    }
}

const EXTS: [&str; 3] = ["png", "jpg", "jpeg"];

fn is_image(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTS.contains(&e.to_ascii_lowercase().as_str()))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

/// Whether a directory holds images (directly or in class subfolders) rather than arrays.
pub fn dir_has_images(dir: &Path) -> Result<bool> {
    for p in sorted_entries(dir)? {
        if is_image(&p) {
            return Ok(true);
        }
        if p.is_dir() && sorted_entries(&p)?.iter().any(|q| is_image(q)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Images of a folder: files in sorted order, with labels when they sit in class subfolders
/// (label = index of the subfolder name in sorted order, names in `classes`).
pub struct ImageList {
    pub files: Vec<PathBuf>,
    pub labels: Option<Vec<i64>>,
    pub classes: Vec<String>,
}

/// Lists the images of a folder (see [`ImageList`]).
pub fn list_images(dir: &Path) -> Result<ImageList> {
    let entries = sorted_entries(dir)?;
    let subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let direct: Vec<PathBuf> = entries.iter().filter(|p| p.is_file() && is_image(p)).cloned().collect();
    if !direct.is_empty() || subdirs.is_empty() {
        return Ok(ImageList { files: direct, labels: None, classes: vec![] });
    }
    let (mut files, mut labels, mut classes) = (vec![], vec![], vec![]);
    for (ci, d) in subdirs.iter().enumerate() {
        classes.push(d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
        for p in sorted_entries(d)? {
            if p.is_file() && is_image(&p) {
                files.push(p);
                labels.push(ci as i64);
            }
        }
    }
    Ok(ImageList { files, labels: Some(labels), classes })
}

/// Decoded size of an image file without preprocessing.
pub fn image_size(path: &Path) -> Result<(usize, usize)> {
    let img = image::open(path)
        .map_err(|e| Error::TensorFile { path: path.to_path_buf(), message: format!("cannot decode image: {e}") })?;
    Ok((img.height() as usize, img.width() as usize))
}

/// Sample shape for the options (after the size has been resolved).
pub fn sample_shape(o: &ImageOptions) -> Vec<usize> {
    let c = o.color.channels();
    match o.layout {
        Layout::Nchw => vec![c, o.height, o.width],
        Layout::Nhwc => vec![o.height, o.width, c],
    }
}

fn per_channel(v: &[f32], c: usize, default: f32) -> Vec<f32> {
    match v.len() {
        0 => vec![default; c],
        1 => vec![v[0]; c],
        _ => v.to_vec(),
    }
}

/// Checks mean/std lengths against the channel count.
pub fn check_options(o: &ImageOptions) -> Result<()> {
    let c = o.color.channels();
    for (name, v) in [("mean", &o.mean), ("std", &o.std)] {
        if v.len() > 1 && v.len() != c {
            return Err(Error::Unavailable(format!("image {name} has {} values, expected 1 or {c}", v.len())));
        }
    }
    if o.std.contains(&0.0) {
        return Err(Error::Unavailable("image std must not be 0".into()));
    }
    Ok(())
}

/// Decodes and preprocesses one image, appending `sample_shape(o)` values to `out`.
pub fn load_image(path: &Path, o: &ImageOptions, out: &mut Vec<f32>) -> Result<()> {
    let err = |m: String| Error::TensorFile { path: path.to_path_buf(), message: m };
    let img = image::open(path).map_err(|e| err(format!("cannot decode image: {e}")))?;
    let (h, w) = (o.height as u32, o.width as u32);
    let c = o.color.channels();
    let raw: Vec<u8> = match o.color {
        ColorMode::Rgb => {
            let mut im = img.to_rgb8();
            if im.dimensions() != (w, h) {
                im = image::imageops::resize(&im, w, h, image::imageops::FilterType::Triangle);
            }
            im.into_raw()
        }
        ColorMode::Gray => {
            let mut im = img.to_luma8();
            if im.dimensions() != (w, h) {
                im = image::imageops::resize(&im, w, h, image::imageops::FilterType::Triangle);
            }
            im.into_raw()
        }
    };
    let (mean, std) = (per_channel(&o.mean, c, 0.0), per_channel(&o.std, c, 1.0));
    let hw = o.height * o.width;
    if raw.len() != hw * c {
        return Err(err(format!("decoded {} values, expected {}", raw.len(), hw * c)));
    }
    let base = out.len();
    out.resize(base + hw * c, 0.0);
    let dst = &mut out[base..];
    for (p, px) in raw.chunks_exact(c).enumerate() {
        for ch in 0..c {
            let v = (px[ch] as f32 * o.scale - mean[ch]) / std[ch];
            match o.layout {
                Layout::Nchw => dst[ch * hw + p] = v,
                Layout::Nhwc => dst[p * c + ch] = v,
            }
        }
    }
    Ok(())
}
