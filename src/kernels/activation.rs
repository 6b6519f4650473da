//! Element-wise activation loops, in place.
//!
//! Backward passes use the activation's *output*, which every layer keeps
//! anyway: relu' = (y > 0 ? 1 : 0), sigmoid' = y (1 - y), tanh' = 1 - y².

/// `x = max(x, 0)`.
pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

/// `grad *= [y > 0]`.
pub fn relu_backward(y: &[f32], grad: &mut [f32]) {
    grad.iter_mut()
        .zip(y)
        .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
}

/// `x = 1 / (1 + e^-x)`.
pub fn sigmoid(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
}

/// `grad *= y (1 - y)`.
pub fn sigmoid_backward(y: &[f32], grad: &mut [f32]) {
    grad.iter_mut()
        .zip(y)
        .for_each(|(g, &y)| *g *= y * (1.0 - y));
}

/// `x = tanh(x)`.
pub fn tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.tanh());
}

/// `grad *= 1 - y²`.
pub fn tanh_backward(y: &[f32], grad: &mut [f32]) {
    grad.iter_mut().zip(y).for_each(|(g, &y)| *g *= 1.0 - y * y);
}

/// Softmax of each row of `width` values; the row maximum is subtracted
/// first so that `exp` never overflows.
pub fn softmax(x: &mut [f32], width: usize) {
    for row in x.chunks_exact_mut(width) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = (*v - max).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Softmax's Jacobian-vector product per row: `g_i = y_i (g_i - Σ_j g_j y_j)`.
pub fn softmax_backward(y: &[f32], grad: &mut [f32], width: usize) {
    for (g, y) in grad.chunks_exact_mut(width).zip(y.chunks_exact(width)) {
        let dot: f32 = g.iter().zip(y).map(|(g, y)| g * y).sum();
        g.iter_mut().zip(y).for_each(|(g, &y)| *g = y * (*g - dot));
    }
}
