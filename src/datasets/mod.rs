//! Data sets that ship with the repository, and helpers to prepare them.

pub mod cifar10;
#[cfg(feature = "images")]
pub mod image_folder;
pub mod mnist;

use ndarray::{Array2, ArrayBase, Data, Ix1};

use crate::{Error, Result};

/// One-hot encodes class indices (Keras `to_categorical`): row `i` has a 1
/// in column `labels[i]` and 0 elsewhere.
///
/// ```
/// use convnet::datasets::to_categorical;
/// use ndarray::array;
/// let y = to_categorical(&array![2u8, 0], 3).unwrap();
/// assert_eq!(y, array![[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]);
/// ```
pub fn to_categorical<S>(labels: &ArrayBase<S, Ix1>, num_classes: usize) -> Result<Array2<f32>>
where
    S: Data,
    S::Elem: Copy + Into<u64>,
{
    let mut out = Array2::zeros((labels.len(), num_classes));
    for (i, &label) in labels.iter().enumerate() {
        let class = label.into() as usize;
        if class >= num_classes {
            return Err(Error::InvalidArgument(format!(
                "label {class} at index {i} is not below num_classes = {num_classes}"
            )));
        }
        out[[i, class]] = 1.0;
    }
    Ok(out)
}
