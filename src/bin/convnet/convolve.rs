//! `convnet convolve`: convolves a photo with a small kernel and writes the
//! result as a grey PNG, optionally next to the input.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use convnet::signal::{self, Boundary, Mode};
use convnet::{Error, Result};
use image::{GrayImage, ImageFormat, Luma};
use ndarray::Array2;

use super::picture;

/// The kernel of the lesson: a diagonal edge detector.
const DEFAULT_KERNEL: &str = "-1 -1 0; -1 0 1; 0 1 1";

/// Options of `convnet convolve`.
#[derive(Args, Debug)]
pub struct ConvolveArgs {
    /// Image to read, PNG or JPEG; colour becomes grey by the BT.601 luma
    /// weights (0.299 R + 0.587 G + 0.114 B, rounded as OpenCV does).
    image: PathBuf,
    /// Where to write the PNG [default: <image name>-convolved.png in the
    /// current folder].
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Kernel rows separated by ';', numbers by spaces and/or commas
    /// [default: "-1 -1 0; -1 0 1; 0 1 1"].
    #[arg(long, allow_hyphen_values = true, conflicts_with = "preset")]
    kernel: Option<String>,
    /// A ready-made kernel instead of --kernel.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Output size: 'same' keeps the image size, 'full' adds the kernel
    /// size minus one, 'valid' keeps only positions where the kernel fits.
    #[arg(long, value_enum, default_value_t = CliMode::Same)]
    mode: CliMode,
    /// How the image continues past its edges. The default 'symm' (mirror)
    /// avoids the false edges a constant fill draws along the border.
    #[arg(long, value_enum, default_value_t = CliBoundary::Symm)]
    boundary: CliBoundary,
    /// The constant outside the image for --boundary fill (grey levels 0..255).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    fill_value: f64,
    /// How the signed result becomes grey levels 0..255: 'abs' scales |x| so
    /// the strongest response is white (edges); 'minmax' maps the minimum to
    /// black and the maximum to white (zero becomes mid-grey); 'clip' keeps
    /// values as they are, cut to 0..255 (blur, sharpen).
    #[arg(long, value_enum, default_value_t = Normalize::Abs)]
    normalize: Normalize,
    /// Put the grey input and the result side by side in one picture.
    #[arg(long)]
    side_by_side: bool,
    /// Arithmetic precision of the convolution.
    #[arg(long, value_enum, default_value_t = Precision::F64)]
    precision: Precision,
}

/// Ready-made kernels.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Preset {
    /// Outline: 8 times the pixel minus its 8 neighbours.
    Edge,
    /// Horizontal gradient (responds to vertical edges).
    SobelX,
    /// Vertical gradient (responds to horizontal edges).
    SobelY,
    /// 4-neighbour Laplacian.
    Laplacian,
    /// 5x5 binomial blur, weights summing to 1.
    Gaussian,
    /// 5x5 mean.
    Box,
    /// The pixel boosted against its 4 neighbours.
    Sharpen,
    /// Relief lit from the bottom right.
    Emboss,
}

impl Preset {
    fn kernel(self) -> Array2<f64> {
        let rows: Vec<Vec<f64>> = match self {
            Preset::Edge => vec![vec![-1., -1., -1.], vec![-1., 8., -1.], vec![-1., -1., -1.]],
            Preset::SobelX => vec![vec![-1., 0., 1.], vec![-2., 0., 2.], vec![-1., 0., 1.]],
            Preset::SobelY => vec![vec![-1., -2., -1.], vec![0., 0., 0.], vec![1., 2., 1.]],
            Preset::Laplacian => vec![vec![0., 1., 0.], vec![1., -4., 1.], vec![0., 1., 0.]],
            Preset::Gaussian => {
                let binomial = [1., 4., 6., 4., 1.];
                let row = |a: f64| binomial.iter().map(|b| a * b / 256.).collect();
                binomial.iter().map(|&a| row(a)).collect()
            }
            Preset::Box => vec![vec![1. / 25.; 5]; 5],
            Preset::Sharpen => vec![vec![0., -1., 0.], vec![-1., 5., -1.], vec![0., -1., 0.]],
            Preset::Emboss => vec![vec![-2., -1., 0.], vec![-1., 1., 1.], vec![0., 1., 2.]],
        };
        let width = rows[0].len();
        Array2::from_shape_vec((rows.len(), width), rows.concat()).expect("presets are rectangular")
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CliMode {
    Full,
    Same,
    Valid,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CliBoundary {
    Fill,
    Wrap,
    Symm,
}

/// How signed results become grey levels.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Normalize {
    Minmax,
    Abs,
    Clip,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Precision {
    F32,
    F64,
}

/// Reads, convolves and writes; nothing is written unless every step works.
pub fn run(args: ConvolveArgs) -> Result<()> {
    let kernel = match (args.preset, &args.kernel) {
        (Some(preset), _) => preset.kernel(),
        (None, Some(text)) => parse_kernel(text)?,
        (None, None) => parse_kernel(DEFAULT_KERNEL)?,
    };
    if !args.fill_value.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "--fill-value {} is not a finite number; give a grey level such as 0 or 255",
            args.fill_value
        )));
    }
    let output = output_path(&args)?;
    convnet::io::check_outputs(&[("the output", &output)], &[&args.image])?;
    let grey = picture::read_grey(&args.image)?;
    let result = convolve(&grey, &kernel, &args)?;
    if result.iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(
            "the result overflows (values past the range of the chosen --precision): use \
             smaller kernel weights, or --precision f64"
                .into(),
        ));
    }
    let picture = to_grey_image(&result, args.normalize);
    let picture = if args.side_by_side {
        side_by_side(&to_grey_image(&grey, Normalize::Clip), &picture)
    } else {
        picture
    };
    write_png_atomically(&output, &picture)?;
    let (low, high) = value_range(&result);
    println!(
        "wrote {} ({}x{}): {}x{} kernel, result values {low:.4}..{high:.4}",
        output.display(),
        picture.width(),
        picture.height(),
        kernel.nrows(),
        kernel.ncols()
    );
    Ok(())
}

fn output_path(args: &ConvolveArgs) -> Result<PathBuf> {
    let path = match &args.output {
        Some(path) => path.clone(),
        None => {
            let stem = args.image.file_stem().unwrap_or_default().to_string_lossy();
            PathBuf::from(format!("{stem}-convolved.png"))
        }
    };
    let is_png = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::InvalidArgument(format!(
            "the output {} must end in .png: convnet convolve writes PNG images",
            path.display()
        )));
    }
    Ok(path)
}

/// `--kernel`'s text as a kernel, with the flag's example in errors.
fn parse_kernel(text: &str) -> Result<Array2<f64>> {
    signal::parse_kernel(text).map_err(|e| match e {
        Error::InvalidArgument(message) => {
            Error::InvalidArgument(format!("{message} (e.g. --kernel \"{DEFAULT_KERNEL}\")"))
        }
        other => other,
    })
}

fn convolve(grey: &Array2<f64>, kernel: &Array2<f64>, args: &ConvolveArgs) -> Result<Array2<f64>> {
    let mode = match args.mode {
        CliMode::Full => Mode::Full,
        CliMode::Same => Mode::Same,
        CliMode::Valid => Mode::Valid,
    };
    let boundary = |fill: f64| match args.boundary {
        CliBoundary::Fill => Boundary::Fill(fill),
        CliBoundary::Wrap => Boundary::Wrap,
        CliBoundary::Symm => Boundary::Symm,
    };
    match args.precision {
        Precision::F64 => {
            signal::convolve2d(grey.view(), kernel.view(), mode, boundary(args.fill_value))
        }
        Precision::F32 => {
            let (grey, kernel) = (grey.mapv(|v| v as f32), kernel.mapv(|v| v as f32));
            let fill = boundary(args.fill_value);
            let fill = match fill {
                Boundary::Fill(v) => Boundary::Fill(v as f32),
                Boundary::Wrap => Boundary::Wrap,
                Boundary::Symm => Boundary::Symm,
            };
            Ok(signal::convolve2d(grey.view(), kernel.view(), mode, fill)?.mapv(f64::from))
        }
    }
}

fn value_range(values: &Array2<f64>) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// Maps the signed result to grey levels as `normalize` says.
fn to_grey_image(values: &Array2<f64>, normalize: Normalize) -> GrayImage {
    let (low, high) = value_range(values);
    let largest_magnitude = low.abs().max(high.abs());
    let level = |v: f64| -> f64 {
        match normalize {
            Normalize::Clip => v,
            Normalize::Abs if largest_magnitude > 0.0 => v.abs() / largest_magnitude * 255.0,
            Normalize::Minmax if high > low => (v - low) / (high - low) * 255.0,
            // A constant result carries no contrast to stretch.
            Normalize::Abs | Normalize::Minmax => 0.0,
        }
    };
    let (height, width) = values.dim();
    GrayImage::from_fn(width as u32, height as u32, |x, y| {
        Luma([level(values[[y as usize, x as usize]])
            .round()
            .clamp(0.0, 255.0) as u8])
    })
}

/// The two pictures next to each other on black, vertically centred, with a
/// white stripe between them.
fn side_by_side(left: &GrayImage, right: &GrayImage) -> GrayImage {
    const GAP: u32 = 8;
    let height = left.height().max(right.height());
    let mut canvas = GrayImage::new(left.width() + GAP + right.width(), height);
    for y in 0..height {
        for x in left.width()..left.width() + GAP {
            canvas.put_pixel(x, y, Luma([255]));
        }
    }
    image::imageops::replace(
        &mut canvas,
        left,
        0,
        i64::from((height - left.height()) / 2),
    );
    let right_x = i64::from(left.width() + GAP);
    image::imageops::replace(
        &mut canvas,
        right,
        right_x,
        i64::from((height - right.height()) / 2),
    );
    canvas
}

/// Encodes the PNG in memory, then writes it with `convnet::io::write_atomic`
/// (a temporary file renamed over `path`), so a failure never leaves a
/// partial image behind.
fn write_png_atomically(path: &Path, picture: &GrayImage) -> Result<()> {
    let mut png = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
        .map_err(|e| Error::Image(format!("{}: cannot encode PNG: {e}", path.display())))?;
    convnet::io::write_atomic(path, &png).map_err(|e| match e {
        Error::Io { source, .. }
            if matches!(
                source.kind(),
                ErrorKind::PermissionDenied | ErrorKind::NotFound | ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            Error::InvalidArgument(format!(
                "cannot write {} ({source}); does its folder exist and can you write to it?",
                path.display()
            ))
        }
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_accept_spaces_and_commas() {
        let kernel = parse_kernel(" 1, 2 ,3;4 5  6 ").unwrap();
        assert_eq!(kernel, ndarray::array![[1., 2., 3.], [4., 5., 6.]]);
    }

    #[test]
    fn kernel_errors_name_the_problem() {
        let message = |text| parse_kernel(text).unwrap_err().to_string();
        assert!(message("").contains("empty"));
        assert!(message("1 2; 3").contains("row 2 has 1 numbers but row 1 has 2"));
        assert!(message("1 x").contains("'x' in kernel row 1"));
        assert!(message("1 2;").contains("row 2 is empty"));
        assert!(message("nan").contains("not a finite number"));
    }

    #[test]
    fn presets_are_the_documented_kernels() {
        let sum = |p: Preset| p.kernel().sum();
        assert!((sum(Preset::Gaussian) - 1.0).abs() < 1e-12);
        assert!((sum(Preset::Box) - 1.0).abs() < 1e-12);
        assert_eq!(sum(Preset::Edge), 0.0);
        assert_eq!(sum(Preset::Laplacian), 0.0);
        assert_eq!(sum(Preset::Sharpen), 1.0);
    }

    #[test]
    fn normalisations_map_to_the_full_grey_range() {
        let values = ndarray::array![[-10.0, 0.0, 5.0, 300.0]];
        let levels = |n| to_grey_image(&values, n).into_raw();
        assert_eq!(levels(Normalize::Clip), [0, 0, 5, 255]);
        assert_eq!(levels(Normalize::Minmax), [0, 8, 12, 255]);
        assert_eq!(levels(Normalize::Abs), [9, 0, 4, 255]);
    }
}
