"""The bibliography: every text and paper the experiments cite, each written once.

A claim's ``source`` is made by :meth:`Work.cite` with the place in the work, never typed by hand::

    from experiments import _sources as src

    src.GLOROT_BENGIO_2010.cite("Sec. 4.2.1, eq. 12")
    # 'Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
    #  networks", Sec. 4.2.1, eq. 12'

so every citation in ``claims.json`` and ``REPORT.md`` names the authors, the title, the year and the
section, figure or equation. :data:`BIBLIOGRAPHY` lists the full entries; the report's reference list
is built from the works its claims cite (:func:`cited_in`).

The four texts whose worked material fnnet reproduces are the first entries. Their formulas did not
survive in the copies fnnet was built from; where an experiment rebuilds one from the surrounding
words and the standard derivation, its docstring says so.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable


@dataclasses.dataclass(frozen=True)
class Work:
    """One bibliographic entry.

    Attributes:
        short: how a citation names the authors, with the year, e.g. ``"He et al. 2015"``.
        title: the title as published; a book's title is given with its edition.
        entry: the full entry (all authors, title, venue, year), for the reference list.
        part: the part of the work fnnet draws on, given in every citation (a book's chapter).
    """

    short: str
    title: str
    entry: str
    part: str = ""

    def cite(self, where: str = "") -> str:
        """``short, "title"[, part][, where]``: the citation a claim's ``source`` holds."""
        pieces = [f'{self.short}, "{self.title}"', self.part, where]
        return ", ".join(p for p in pieces if p)


# --- the texts fnnet reproduces -------------------------------------------------------------------

GULLI_2019 = Work(
    "Gulli, Kapoor & Pal 2019",
    "Deep Learning with TensorFlow 2 and Keras, 2nd ed.",
    "A. Gulli, A. Kapoor, S. Pal, *Deep Learning with TensorFlow 2 and Keras*, 2nd ed., Packt, 2019, "
    'ch. "The Math Behind Deep Learning"',
    'ch. "The Math Behind Deep Learning"',
)
KAPOOR_2022 = Work(
    "Kapoor, Gulli & Pal 2022",
    "Deep Learning with TensorFlow and Keras, 3rd ed.",
    "A. Kapoor, A. Gulli, S. Pal, *Deep Learning with TensorFlow and Keras*, 3rd ed., Packt, 2022, "
    'ch. "The Math Behind Deep Learning"',
    'ch. "The Math Behind Deep Learning"',
)
ML_MATH_19 = Work(
    "ML Math Derivations (author not given), n.d.",
    "ML Math Derivations (19): Neural Networks and Backpropagation",
    '"ML Math Derivations (19): Neural Networks and Backpropagation", online series, author not given, n.d.',
)
JAOKAR = Work(
    "Jaokar, n.d.",
    "A simplified explanation for Understanding the Mathematics of Deep Learning",
    'A. Jaokar, "A simplified explanation for Understanding the Mathematics of Deep Learning", blog post, n.d.',
)

# --- initialization and signal propagation --------------------------------------------------------

GLOROT_BENGIO_2010 = Work(
    "Glorot & Bengio 2010",
    "Understanding the difficulty of training deep feedforward neural networks",
    'X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward neural networks", AISTATS, 2010',
)
HE_2015 = Work(
    "He et al. 2015",
    "Delving Deep into Rectifiers: Surpassing Human-Level Performance on ImageNet Classification",
    'K. He, X. Zhang, S. Ren, J. Sun, "Delving Deep into Rectifiers: Surpassing Human-Level Performance on '
    'ImageNet Classification", ICCV, 2015',
)
HE_2016 = Work(
    "He et al. 2016",
    "Deep Residual Learning for Image Recognition",
    'K. He, X. Zhang, S. Ren, J. Sun, "Deep Residual Learning for Image Recognition", CVPR, 2016',
)
GOODFELLOW_2016 = Work(
    "Goodfellow, Bengio & Courville 2016",
    "Deep Learning",
    "I. Goodfellow, Y. Bengio, A. Courville, *Deep Learning*, MIT Press, 2016",
)
LECUN_1998 = Work(
    "LeCun et al. 1998",
    "Efficient BackProp",
    'Y. LeCun, L. Bottou, G. B. Orr, K.-R. Müller, "Efficient BackProp", in *Neural Networks: Tricks of the '
    "Trade*, Springer, 1998",
)
SAXE_2014 = Work(
    "Saxe et al. 2014",
    "Exact solutions to the nonlinear dynamics of learning in deep linear neural networks",
    'A. M. Saxe, J. L. McClelland, S. Ganguli, "Exact solutions to the nonlinear dynamics of learning in deep '
    'linear neural networks", ICLR, 2014',
)
POOLE_2016 = Work(
    "Poole et al. 2016",
    "Exponential expressivity in deep neural networks through transient chaos",
    'B. Poole, S. Lahiri, M. Raghu, J. Sohl-Dickstein, S. Ganguli, "Exponential expressivity in deep neural '
    'networks through transient chaos", NeurIPS, 2016',
)
SCHOENHOLZ_2017 = Work(
    "Schoenholz et al. 2017",
    "Deep Information Propagation",
    'S. S. Schoenholz, J. Gilmer, S. Ganguli, J. Sohl-Dickstein, "Deep Information Propagation", ICLR, 2017',
)
PENNINGTON_2017 = Work(
    "Pennington, Schoenholz & Ganguli 2017",
    "Resurrecting the sigmoid in deep learning through dynamical isometry: theory and practice",
    'J. Pennington, S. S. Schoenholz, S. Ganguli, "Resurrecting the sigmoid in deep learning through dynamical '
    'isometry: theory and practice", NeurIPS, 2017',
)
YANG_2019 = Work(
    "Yang et al. 2019",
    "A Mean Field Theory of Batch Normalization",
    'G. Yang, J. Pennington, V. Rao, J. Sohl-Dickstein, S. S. Schoenholz, "A Mean Field Theory of Batch '
    'Normalization", ICLR, 2019',
)
MEZZADRI_2007 = Work(
    "Mezzadri 2007",
    "How to generate random matrices from the classical compact groups",
    'F. Mezzadri, "How to generate random matrices from the classical compact groups", Notices of the AMS, 54(5), 2007',
)
LU_2019 = Work(
    "Lu et al. 2019",
    "Dying ReLU and Initialization: Theory and Numerical Examples",
    'L. Lu, Y. Shin, Y. Su, G. E. Karniadakis, "Dying ReLU and Initialization: Theory and Numerical Examples", '
    "arXiv:1903.06733, 2019",
)
MAAS_2013 = Work(
    "Maas et al. 2013",
    "Rectifier Nonlinearities Improve Neural Network Acoustic Models",
    'A. L. Maas, A. Y. Hannun, A. Y. Ng, "Rectifier Nonlinearities Improve Neural Network Acoustic Models", '
    "ICML Workshop on Deep Learning for Audio, Speech and Language Processing, 2013",
)
IOFFE_SZEGEDY_2015 = Work(
    "Ioffe & Szegedy 2015",
    "Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate Shift",
    'S. Ioffe, C. Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing Internal '
    'Covariate Shift", ICML, 2015',
)

# --- batch size and optimization ------------------------------------------------------------------

SHALLUE_2018 = Work(
    "Shallue et al. 2018",
    "Measuring the Effects of Data Parallelism on Neural Network Training",
    'C. J. Shallue, J. Lee, J. Antognini, J. Sohl-Dickstein, R. Frostig, G. E. Dahl, "Measuring the Effects of '
    'Data Parallelism on Neural Network Training", arXiv:1811.03600, 2018 (JMLR 20, 2019)',
)
MCCANDLISH_2018 = Work(
    "McCandlish et al. 2018",
    "An Empirical Model of Large-Batch Training",
    'S. McCandlish, J. Kaplan, D. Amodei, OpenAI Dota Team, "An Empirical Model of Large-Batch Training", '
    "arXiv:1812.06162, 2018",
)
SMITH_LE_2018 = Work(
    "Smith & Le 2018",
    "A Bayesian Perspective on Generalization and Stochastic Gradient Descent",
    'S. L. Smith, Q. V. Le, "A Bayesian Perspective on Generalization and Stochastic Gradient Descent", ICLR, 2018',
)
KESKAR_2017 = Work(
    "Keskar et al. 2017",
    "On Large-Batch Training for Deep Learning: Generalization Gap and Sharp Minima",
    'N. S. Keskar, D. Mudigere, J. Nocedal, M. Smelyanskiy, P. T. P. Tang, "On Large-Batch Training for Deep '
    'Learning: Generalization Gap and Sharp Minima", ICLR, 2017',
)
GOYAL_2017 = Work(
    "Goyal et al. 2017",
    "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour",
    "P. Goyal, P. Dollár, R. Girshick, P. Noordhuis, L. Wesolowski, A. Kyrola, A. Tulloch, Y. Jia, K. He, "
    '"Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv:1706.02677, 2017',
)
HOFFER_2017 = Work(
    "Hoffer et al. 2017",
    "Train longer, generalize better: closing the generalization gap in large batch training of neural networks",
    'E. Hoffer, I. Hubara, D. Soudry, "Train longer, generalize better: closing the generalization gap in large '
    'batch training of neural networks", NeurIPS, 2017',
)
COHEN_2021 = Work(
    "Cohen et al. 2021",
    "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability",
    'J. M. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient Descent on Neural Networks Typically '
    'Occurs at the Edge of Stability", ICLR, 2021',
)
GODBOLE_2023 = Work(
    "Godbole et al. 2023",
    "Deep Learning Tuning Playbook",
    'V. Godbole, G. E. Dahl, J. Gilmer, C. J. Shallue, Z. Nado, "Deep Learning Tuning Playbook", '
    "github.com/google-research/tuning_playbook, version 1.0, 2023",
)
GREYDANUS_2020 = Work(
    "Greydanus 2020",
    "Scaling down Deep Learning",
    'S. Greydanus, "Scaling down Deep Learning", arXiv:2011.14439, 2020',
)

# --- loss surfaces --------------------------------------------------------------------------------

DAUPHIN_2014 = Work(
    "Dauphin et al. 2014",
    "Identifying and attacking the saddle point problem in high-dimensional non-convex optimization",
    'Y. N. Dauphin, R. Pascanu, C. Gulcehre, K. Cho, S. Ganguli, Y. Bengio, "Identifying and attacking the '
    'saddle point problem in high-dimensional non-convex optimization", NeurIPS, 2014',
)
BRAY_DEAN_2007 = Work(
    "Bray & Dean 2007",
    "Statistics of critical points of Gaussian fields on large-dimensional spaces",
    'A. J. Bray, D. S. Dean, "Statistics of critical points of Gaussian fields on large-dimensional spaces", '
    "Physical Review Letters 98, 2007",
)
LI_2018 = Work(
    "Li et al. 2018",
    "Visualizing the Loss Landscape of Neural Nets",
    'H. Li, Z. Xu, G. Taylor, C. Studer, T. Goldstein, "Visualizing the Loss Landscape of Neural Nets", NeurIPS, 2018',
)
ANTOGNINI_2018 = Work(
    "Antognini & Sohl-Dickstein 2018",
    "PCA of high dimensional random walks with comparison to neural network training",
    'J. M. Antognini, J. Sohl-Dickstein, "PCA of high dimensional random walks with comparison to neural network '
    'training", NeurIPS, 2018',
)
FUKUMIZU_AMARI_2000 = Work(
    "Fukumizu & Amari 2000",
    "Local minima and plateaus in hierarchical structures of multilayer perceptrons",
    'K. Fukumizu, S. Amari, "Local minima and plateaus in hierarchical structures of multilayer perceptrons", '
    "Neural Networks 13, 2000",
)
FRYE_2021 = Work(
    "Frye et al. 2021",
    "Critical Point-Finding Methods Reveal Gradient-Flat Regions of Deep Network Losses",
    'C. G. Frye, J. Simon, N. S. Wadia, A. Ligeralde, M. R. DeWeese, K. E. Bouchard, "Critical Point-Finding '
    'Methods Reveal Gradient-Flat Regions of Deep Network Losses", Neural Computation 33, 2021',
)
SAGUN_2017 = Work(
    "Sagun, Bottou & LeCun 2017",
    "Eigenvalues of the Hessian in Deep Learning: Singularity and Beyond",
    'L. Sagun, L. Bottou, Y. LeCun, "Eigenvalues of the Hessian in Deep Learning: Singularity and Beyond", '
    "arXiv:1611.07476 (2016), ICLR Workshop, 2017",
)
SAGUN_EVCI_2017 = Work(
    "Sagun et al. 2017",
    "Empirical Analysis of the Hessian of Over-Parametrized Neural Networks",
    'L. Sagun, U. Evci, V. U. Güney, Y. Dauphin, L. Bottou, "Empirical Analysis of the Hessian of '
    'Over-Parametrized Neural Networks", arXiv:1706.04454, 2017',
)
PAPYAN_2019 = Work(
    "Papyan 2019",
    "Measurements of Three-Level Hierarchical Structure in the Outliers in the Spectrum of Deepnet Hessians",
    'V. Papyan, "Measurements of Three-Level Hierarchical Structure in the Outliers in the Spectrum of Deepnet '
    'Hessians", ICML, 2019',
)
GHORBANI_2019 = Work(
    "Ghorbani, Krishnan & Xiao 2019",
    "An Investigation into Neural Net Optimization via Hessian Eigenvalue Density",
    'B. Ghorbani, S. Krishnan, Y. Xiao, "An Investigation into Neural Net Optimization via Hessian Eigenvalue '
    'Density", ICML, 2019',
)

# --- recurrent networks ---------------------------------------------------------------------------

PASCANU_2013 = Work(
    "Pascanu, Mikolov & Bengio 2013",
    "On the difficulty of training recurrent neural networks",
    'R. Pascanu, T. Mikolov, Y. Bengio, "On the difficulty of training recurrent neural networks", ICML, 2013',
)
HOCHREITER_SCHMIDHUBER_1997 = Work(
    "Hochreiter & Schmidhuber 1997",
    "Long Short-Term Memory",
    'S. Hochreiter, J. Schmidhuber, "Long Short-Term Memory", Neural Computation 9(8), 1997',
)
GERS_2000 = Work(
    "Gers, Schmidhuber & Cummins 2000",
    "Learning to Forget: Continual Prediction with LSTM",
    'F. A. Gers, J. Schmidhuber, F. Cummins, "Learning to Forget: Continual Prediction with LSTM", '
    "Neural Computation 12(10), 2000",
)
JOZEFOWICZ_2015 = Work(
    "Jozefowicz, Zaremba & Sutskever 2015",
    "An Empirical Exploration of Recurrent Network Architectures",
    'R. Jozefowicz, W. Zaremba, I. Sutskever, "An Empirical Exploration of Recurrent Network Architectures", '
    "ICML, 2015",
)
LE_2015 = Work(
    "Le, Jaitly & Hinton 2015",
    "A Simple Way to Initialize Recurrent Networks of Rectified Linear Units",
    'Q. V. Le, N. Jaitly, G. E. Hinton, "A Simple Way to Initialize Recurrent Networks of Rectified Linear '
    'Units", arXiv:1504.00941, 2015',
)
ELMAN_1990 = Work(
    "Elman 1990", "Finding Structure in Time", 'J. L. Elman, "Finding Structure in Time", Cognitive Science 14, 1990'
)
WERBOS_1990 = Work(
    "Werbos 1990",
    "Backpropagation Through Time: What It Does and How to Do It",
    'P. J. Werbos, "Backpropagation Through Time: What It Does and How to Do It", Proceedings of the IEEE 78(10), 1990',
)

# --- perceptrons, approximation, convolution ------------------------------------------------------

NOVIKOFF_1962 = Work(
    "Novikoff 1962",
    "On Convergence Proofs on Perceptrons",
    'A. B. J. Novikoff, "On Convergence Proofs on Perceptrons", Symposium on the Mathematical Theory of Automata, 1962',
)
MINSKY_PAPERT_1969 = Work(
    "Minsky & Papert 1969",
    "Perceptrons: An Introduction to Computational Geometry",
    "M. Minsky, S. Papert, *Perceptrons: An Introduction to Computational Geometry*, MIT Press, 1969",
)
CYBENKO_1989 = Work(
    "Cybenko 1989",
    "Approximation by Superpositions of a Sigmoidal Function",
    'G. Cybenko, "Approximation by Superpositions of a Sigmoidal Function", Mathematics of Control, Signals and '
    "Systems 2, 1989",
)
HORNIK_1991 = Work(
    "Hornik 1991",
    "Approximation Capabilities of Multilayer Feedforward Networks",
    'K. Hornik, "Approximation Capabilities of Multilayer Feedforward Networks", Neural Networks 4(2), 1991',
)
DUMOULIN_VISIN_2016 = Work(
    "Dumoulin & Visin 2016",
    "A guide to convolution arithmetic for deep learning",
    'V. Dumoulin, F. Visin, "A guide to convolution arithmetic for deep learning", arXiv:1603.07285, 2016',
)

# --- attention and transformers ------------------------------------------------------------------

VASWANI_2017 = Work(
    "Vaswani et al. 2017",
    "Attention Is All You Need",
    'A. Vaswani, N. Shazeer, N. Parmar, J. Uszkoreit, L. Jones, A. N. Gomez, L. Kaiser, I. Polosukhin, "Attention '
    'Is All You Need", NeurIPS, 2017',
)
XIONG_2020 = Work(
    "Xiong et al. 2020",
    "On Layer Normalization in the Transformer Architecture",
    'R. Xiong, Y. Yang, D. He, K. Zheng, S. Zheng, C. Xing, H. Zhang, Y. Lan, L. Wang, T.-Y. Liu, "On Layer '
    'Normalization in the Transformer Architecture", ICML, 2020',
)
DONG_2021 = Work(
    "Dong, Cordonnier & Loukas 2021",
    "Attention is Not All You Need: Pure Attention Loses Rank Doubly Exponentially with Depth",
    'Y. Dong, J.-B. Cordonnier, A. Loukas, "Attention is Not All You Need: Pure Attention Loses Rank Doubly '
    'Exponentially with Depth", ICML, 2021',
)
KARPATHY_2024 = Work(
    "Karpathy 2024",
    "llm.c: LLM training in simple, raw C/CUDA",
    'A. Karpathy, "llm.c: LLM training in simple, raw C/CUDA", software, github.com/karpathy/llm.c, 2024',
)

#: Every work, in the order above.
BIBLIOGRAPHY: tuple[Work, ...] = tuple(v for v in list(globals().values()) if isinstance(v, Work))


def cited_in(sources: Iterable[str]) -> list[Work]:
    """The works of :data:`BIBLIOGRAPHY` that any of the citation strings ``sources`` cites, in bibliography order."""
    text = "\n".join(sources)
    return [w for w in BIBLIOGRAPHY if f'"{w.title}"' in text]
