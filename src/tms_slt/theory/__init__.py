"""Closed forms that tms-slt is tested against: learning coefficients and k-gon losses.

Everything here is a pure function of integers or of a few floats (plain Python / numpy /
scipy), except :class:`Potential`, whose ``__call__`` is torch so that a sampler can use it
as "loss minus its minimum".

Contents and sources (see ``/work/shared/REFERENCES.md``):

* :func:`regular_learning_coefficient`: regular model, λ = d/2 (Watanabe 2009).
* :func:`rrr_learning_coefficient`: reduced-rank regression, Aoyagi & Watanabe 2005,
  "Stochastic complexities of reduced rank regression in Bayesian estimation",
  Neural Networks 18(7).
* :func:`dln_learning_coefficient`: deep linear networks, Aoyagi 2024, "Consideration on
  the learning efficiency of multiple-layered neural networks with linear units",
  Neural Networks 172, Theorem 1 (as quoted in Lau et al. 2023, arXiv 2308.12108).
* :func:`normal_crossing_learning_coefficient`,
  :func:`sum_of_normal_crossings_learning_coefficient`: monomial potentials (Watanabe
  2009, "Algebraic Geometry and Statistical Learning Theory", the normal-crossing case).
* :class:`Potential`, :func:`quadratic_potential`, :func:`normal_crossing_potential`,
  :func:`sum_of_normal_crossings_potential`, :func:`dln_potential` (with its anchor
  :func:`dln_anchor`): test potentials K ≥ 0, K(0) = 0, with known λ.
* :func:`tms_population_loss`, :func:`tms_population_loss_torch`, :func:`kgon_solution`,
  :func:`kgon_critical_point`, :func:`kgon_loss`: the exact high-sparsity TMS loss and its
  regular k-gon critical points (Chen, Lau, Mendel, Wei, Murfet 2023, "Dynamical versus
  Bayesian phase transitions in a toy model of superposition", arXiv 2310.06301).

* :func:`kgon_llc`, :func:`kgon_llc_report`, :func:`kgon_llc_of_label`: the local learning
  coefficient of a regular k-gon where it is a Morse–Bott minimum of the exact loss,
  λ = rank(∇²L)/2, derived here (not quoted from the paper) and verified numerically.
* :func:`morse_bott_free_energy`, :class:`MorseBottFreeEnergy`, :func:`kgon_free_energy`,
  :func:`dead_column_prior_mass`: the free energy of a Morse–Bott minimum with every O(1)
  term (Laplace's method normal to the minimum set; Watanabe 2009 for an isolated minimum),
  and its terms at the k-gons (the log-det of the curved directions, symmetric copies,
  rotation orbit, prior density, prior mass of a dead column's flat region).
"""

from tms_slt.theory.coefficients import (
    dln_learning_coefficient,
    normal_crossing_learning_coefficient,
    regular_learning_coefficient,
    rrr_learning_coefficient,
    sum_of_normal_crossings_learning_coefficient,
)
from tms_slt.theory.free_energy import (
    KGonFreeEnergy,
    MorseBottFreeEnergy,
    dead_column_prior_mass,
    gaussian_log_density,
    kgon_free_energy,
    morse_bott_free_energy,
)
from tms_slt.theory.potentials import (
    Potential,
    dln_anchor,
    dln_potential,
    normal_crossing_potential,
    quadratic_potential,
    sum_of_normal_crossings_potential,
)
from tms_slt.theory.tms import (
    KGonLLC,
    KGonSolution,
    kgon_critical_point,
    kgon_llc,
    kgon_llc_of_label,
    kgon_llc_report,
    kgon_loss,
    kgon_solution,
    kgon_variants,
    tms_population_loss,
    tms_population_loss_torch,
)

__all__ = [
    "KGonFreeEnergy",
    "KGonLLC",
    "KGonSolution",
    "MorseBottFreeEnergy",
    "Potential",
    "dead_column_prior_mass",
    "dln_anchor",
    "dln_learning_coefficient",
    "dln_potential",
    "gaussian_log_density",
    "kgon_critical_point",
    "kgon_free_energy",
    "kgon_llc",
    "kgon_llc_of_label",
    "kgon_llc_report",
    "kgon_loss",
    "kgon_solution",
    "kgon_variants",
    "morse_bott_free_energy",
    "normal_crossing_learning_coefficient",
    "normal_crossing_potential",
    "quadratic_potential",
    "regular_learning_coefficient",
    "rrr_learning_coefficient",
    "sum_of_normal_crossings_learning_coefficient",
    "sum_of_normal_crossings_potential",
    "tms_population_loss",
    "tms_population_loss_torch",
]
