//! The table printed by `Sequential::summary`, drawn as Keras 3 draws it.

/// `1234567` → `"1,234,567"`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `f32` parameters as Keras states their size: `173.54 KB`.
fn size(params: usize) -> String {
    let bytes = params as f64 * 4.0;
    let units = ["B", "KB", "MB", "GB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", units[unit])
}

fn shape(dims: &[usize]) -> String {
    let dims: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("(None, {})", dims.join(", "))
}

/// Renders the table from (layer name and type, output shape, trainable
/// params, non-trainable values) rows; like Keras, a layer's `Param #`
/// counts both.
pub fn render(
    model: &str,
    rows: impl Iterator<Item = (String, Vec<usize>, usize, usize)>,
) -> String {
    let (mut trainable, mut fixed) = (0, 0);
    let rows: Vec<(String, String, String)> = rows
        .map(|(layer, dims, params, state)| {
            trainable += params;
            fixed += state;
            (layer, shape(&dims), thousands(params + state))
        })
        .collect();
    let total = trainable + fixed;
    let header = (
        "Layer (type)".to_string(),
        "Output Shape".to_string(),
        "Param #".to_string(),
    );
    let w0 = rows
        .iter()
        .map(|r| r.0.chars().count())
        .chain([header.0.len()])
        .max()
        .unwrap_or(0)
        .max(31);
    let w1 = rows
        .iter()
        .map(|r| r.1.len())
        .chain([header.1.len()])
        .max()
        .unwrap_or(0)
        .max(22);
    let w2 = rows
        .iter()
        .map(|r| r.2.len())
        .chain([header.2.len()])
        .max()
        .unwrap_or(0)
        .max(13);
    let line = |l: &str, m: &str, r: &str, fill: &str| {
        format!(
            "{l}{}{m}{}{m}{}{r}\n",
            fill.repeat(w0 + 2),
            fill.repeat(w1 + 2),
            fill.repeat(w2 + 2)
        )
    };
    let cells = |edge: &str, (a, b, c): &(String, String, String)| {
        format!("{edge} {a:<w0$} {edge} {b:<w1$} {edge} {c:>w2$} {edge}\n")
    };
    let mut out = format!("Model: \"{model}\"\n");
    out += &line("┏", "┳", "┓", "━");
    out += &cells("┃", &header);
    out += &line("┡", "╇", "┩", "━");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out += &line("├", "┼", "┤", "─");
        }
        out += &cells("│", row);
    }
    out += &line("└", "┴", "┘", "─");
    out += &format!(" Total params: {} ({})\n", thousands(total), size(total));
    for (what, count) in [("Trainable", trainable), ("Non-trainable", fixed)] {
        out += &format!(" {what} params: {} ({})\n", thousands(count), size(count));
    }
    out
}
