//! `feature_maps`: every layer's output for some inputs, layer by layer,
//! so that each is seen (the plan's fused stages never store some of them).

use ndarray::{ArrayD, IxDyn};

use super::Sequential;
use crate::Result;
use crate::data::Samples;

impl Sequential {
    /// Each layer's output for the samples of `x`, in inference mode
    /// (Keras `training=False`): `(layer name, output)` in layer order,
    /// each output of shape `(N, ..layer output shape)`, e.g. the maps a
    /// convolution's filters bring out of an image.
    ///
    /// The layers run one by one, none fused or folded into another, so
    /// every output exists; the last one is what
    /// [`Sequential::predict`] returns (up to rounding, as the execution
    /// plan may fuse layers). All of `x` goes through at once: pass a few
    /// samples.
    ///
    /// ```
    /// use convnet::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
    /// use convnet::{Activation::*, Sequential};
    /// use ndarray::Array4;
    ///
    /// let mut model = Sequential::with_seed(1);
    /// model.add(Conv2D::new(6, (5, 5)).activation(Relu).input_shape(&[28, 28, 1]));
    /// model.add(MaxPooling2D::new((2, 2)));
    /// model.add(Flatten::new());
    /// model.add(Dense::new(10).activation(Softmax));
    /// model.build()?;
    /// let image = Array4::<f32>::zeros((1, 28, 28, 1));
    /// let maps = model.feature_maps(&image)?;
    /// assert_eq!(maps[0].0, "conv2d");
    /// assert_eq!(maps[0].1.shape(), [1, 24, 24, 6]);
    /// assert_eq!(maps[1].1.shape(), [1, 12, 12, 6]);
    /// assert_eq!(maps.last().unwrap().1.shape(), [1, 10]);
    /// # Ok::<(), convnet::Error>(())
    /// ```
    pub fn feature_maps(&self, x: &dyn Samples) -> Result<Vec<(String, ArrayD<f32>)>> {
        self.check_ready("feature_maps")?;
        self.check_inputs(x, "feature_maps")?;
        self.check_batch(x.len(), "feature_maps")?;
        let mut shape = vec![x.len()];
        shape.extend_from_slice(&self.network.input_shape);
        let mut input = ArrayD::zeros(IxDyn(&shape));
        let indices: Vec<usize> = (0..x.len()).collect();
        x.gather(&indices, input.as_slice_mut().expect("standard layout"))?;
        let mut maps: Vec<(String, ArrayD<f32>)> = Vec::with_capacity(self.network.entries.len());
        for entry in &self.network.entries {
            let mut output = ArrayD::zeros(IxDyn(&[0]));
            let previous = maps.last().map_or(&input, |(_, map)| map);
            entry.layer.forward(previous, &mut output);
            maps.push((entry.name.clone(), output));
        }
        Ok(maps)
    }
}
