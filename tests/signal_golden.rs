//! Golden tests: `convnet::signal` against results recorded from scipy by
//! `scripts/gen_signal_fixtures.py` (see that script for what the cases cover).

use convnet::signal::{Boundary, Element, FftElement, Mode, convolve2d, correlate2d, fftconvolve};
use ndarray::Array2;
use serde_json::Value;

fn load(name: &str) -> Vec<Value> {
    let path = format!(
        "{}/tests/fixtures/signal/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let document: Value = serde_json::from_str(&text).expect("fixture is JSON");
    document["cases"].as_array().expect("cases").clone()
}

/// How a JSON number becomes an element, and how close two elements must be.
trait Golden: Element + PartialEq {
    fn from_json(value: &Value) -> Self;
    fn to_f64(self) -> f64;
    /// Allowed difference relative to the largest expected magnitude.
    const DIRECT_TOLERANCE: f64;
}

impl Golden for i32 {
    fn from_json(value: &Value) -> Self {
        i32::try_from(value.as_i64().expect("integer")).expect("fits i32")
    }
    fn to_f64(self) -> f64 {
        self.into()
    }
    const DIRECT_TOLERANCE: f64 = 0.0;
}

impl Golden for i64 {
    fn from_json(value: &Value) -> Self {
        value.as_i64().expect("integer")
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    const DIRECT_TOLERANCE: f64 = 0.0;
}

impl Golden for f32 {
    fn from_json(value: &Value) -> Self {
        value.as_f64().expect("number") as f32
    }
    fn to_f64(self) -> f64 {
        self.into()
    }
    const DIRECT_TOLERANCE: f64 = 1e-6;
}

impl Golden for f64 {
    fn from_json(value: &Value) -> Self {
        value.as_f64().expect("number")
    }
    fn to_f64(self) -> f64 {
        self
    }
    const DIRECT_TOLERANCE: f64 = 1e-14;
}

fn matrix<T: Golden>(value: &Value) -> Array2<T> {
    let rows = value.as_array().expect("rows");
    let width = rows[0].as_array().expect("row").len();
    let data: Vec<T> = rows
        .iter()
        .flat_map(|row| row.as_array().expect("row").iter().map(T::from_json))
        .collect();
    Array2::from_shape_vec((rows.len(), width), data).expect("rectangular")
}

fn mode(case: &Value) -> Mode {
    match case["mode"].as_str().expect("mode") {
        "full" => Mode::Full,
        "same" => Mode::Same,
        "valid" => Mode::Valid,
        other => panic!("unknown mode {other}"),
    }
}

fn boundary<T: Golden>(case: &Value) -> Boundary<T> {
    match case["boundary"].as_str().expect("boundary") {
        "fill" => Boundary::Fill(T::from_json(&case["fill"])),
        "wrap" => Boundary::Wrap,
        "symm" => Boundary::Symm,
        other => panic!("unknown boundary {other}"),
    }
}

/// Checks a result against the case's expectation; returns a description of
/// the mismatch, if any.
fn compare<T: Golden>(
    case: &Value,
    got: convnet::Result<Array2<T>>,
    tolerance: f64,
) -> Option<String> {
    let expected = match (&case.get("expected"), got) {
        (None, Err(_)) => return None,
        (None, Ok(array)) => return Some(format!("expected an error, got {array:?}")),
        (Some(_), Err(e)) => return Some(format!("unexpected error {e}")),
        (Some(expected), Ok(array)) => (matrix::<T>(expected), array),
    };
    let (expected, got) = expected;
    if expected.dim() != got.dim() {
        return Some(format!(
            "shape {:?}, expected {:?}",
            got.dim(),
            expected.dim()
        ));
    }
    let scale = expected
        .iter()
        .fold(1.0_f64, |m, &x| m.max(x.to_f64().abs()));
    let worst = expected
        .iter()
        .zip(&got)
        .map(|(&e, &g)| {
            if e == g {
                0.0
            } else {
                (e.to_f64() - g.to_f64()).abs().max(f64::MIN_POSITIVE)
            }
        })
        .fold(0.0, f64::max);
    (worst > tolerance * scale).then(|| {
        format!("differs by {worst:e} (scale {scale})\n got {got:?}\n expected {expected:?}")
    })
}

fn check_direct<T: Golden>(case: &Value) -> Option<String> {
    let in1 = matrix::<T>(&case["in1"]);
    let in2 = matrix::<T>(&case["in2"]);
    let got = match case["function"].as_str().expect("function") {
        "convolve2d" => convolve2d(in1.view(), in2.view(), mode(case), boundary(case)),
        "correlate2d" => correlate2d(in1.view(), in2.view(), mode(case), boundary(case)),
        other => panic!("unknown function {other}"),
    };
    compare(case, got, T::DIRECT_TOLERANCE)
}

fn check_fft<T: Golden + FftElement>(case: &Value, tolerance: f64) -> Option<String> {
    let in1 = matrix::<T>(&case["in1"]);
    let in2 = matrix::<T>(&case["in2"]);
    compare(
        case,
        fftconvolve(in1.view(), in2.view(), mode(case)),
        tolerance,
    )
}

fn describe(case: &Value) -> String {
    format!(
        "{} {} mode={} boundary={} in1 {}x{} in2 {}x{}",
        case["function"],
        case["dtype"],
        case["mode"],
        case["boundary"],
        case["in1"].as_array().map_or(0, Vec::len),
        case["in1"][0].as_array().map_or(0, Vec::len),
        case["in2"].as_array().map_or(0, Vec::len),
        case["in2"][0].as_array().map_or(0, Vec::len),
    )
}

fn assert_all(cases: &[Value], check: impl Fn(&Value) -> Option<String>) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(case).map(|why| format!("{}: {why}", describe(case))))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from scipy:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn convolve2d_and_correlate2d_match_scipy() {
    let cases = load("direct.json");
    assert!(cases.len() > 200, "the fixture lost its cases");
    assert!(
        cases.iter().any(|c| c.get("error").is_some()),
        "no error cases"
    );
    assert_all(&cases, |case| {
        match case["dtype"].as_str().expect("dtype") {
            "i32" => check_direct::<i32>(case),
            "i64" => check_direct::<i64>(case),
            "f32" => check_direct::<f32>(case),
            "f64" => check_direct::<f64>(case),
            other => panic!("unknown dtype {other}"),
        }
    });
}

#[test]
fn fftconvolve_matches_scipy() {
    let cases = load("fft.json");
    assert!(cases.len() > 50, "the fixture lost its cases");
    assert_all(&cases, |case| {
        match case["dtype"].as_str().expect("dtype") {
            "f32" => check_fft::<f32>(case, 1e-5),
            "f64" => check_fft::<f64>(case, 1e-13),
            other => panic!("unknown dtype {other}"),
        }
    });
}
