"""The FFLUX kernel k(x, x') = exp(-sum_d theta_d delta_d^2), written once (`formula`), with wrapped
differences on the periodic phi features, and its forms: a gpytorch Kernel (`CyclicRBFKernel`), a lean dense
autograd form (`lean_kernel_matrix`), a row-blocked linear operator with no n x n storage
(`BlockedKernelOperator`) and a KeOps kernel (`kernels.keops`, optional)."""
from tlgp_torch.kernels.blocked import BlockedKernelOperator
from tlgp_torch.kernels.cyclic_rbf import CyclicRBFKernel
from tlgp_torch.kernels.formula import (
                                        cyclic_indices,
                                        lengthscale_to_theta,
                                        rbf_matrix,
                                        scaled_sq_dist,
                                        theta_to_lengthscale,
                                        wrap_angle,
)
from tlgp_torch.kernels.lean import lean_kernel_matrix

__all__ = ["BlockedKernelOperator", "CyclicRBFKernel", "cyclic_indices", "lean_kernel_matrix",
           "lengthscale_to_theta", "rbf_matrix", "scaled_sq_dist", "theta_to_lengthscale", "wrap_angle"]
