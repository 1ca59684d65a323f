"""DeformConv, the one layer torch lacks: its Python front (`deform_conv`) and its kernels
(`cpu_kernel` builds csrc/deform_conv_cpu.cpp; `triton_kernels` for CUDA)."""
