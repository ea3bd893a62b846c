"""Building blocks shared by the model families (import from the submodules).

- ``conv``: ``CausalConv3d`` (replicate-first-frame or zero front padding).
- ``resnet``: the LDM pre-norm ``ResnetBlock``.
- ``sampling``: causal up/down samplers.
- ``attention``: video self-attention (frame-causal without a dense mask).
- ``norm``: ``ChannelRMSNorm`` (RMS over channels, weight and bias).
- ``pixel_shuffle``: 2-D/3-D pixel (un)shuffle and the parameter-free ``SpaceToChannelAverage`` /
  ``ChannelRepeatShuffle`` shortcuts.
- ``per_frame``: apply image layers frame by frame.
- ``posterior``: ``DiagonalGaussianDistribution``.
- ``tiling``: ``TilingConfig`` / ``VideoTiler``, tiled and streamed encode/decode for every model.
"""
