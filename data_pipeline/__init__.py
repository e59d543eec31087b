"""Records, simulation, rasters and tf.data input for mtlcc-tf (never imports mtlcc_tf)."""
