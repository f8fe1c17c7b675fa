"""Control laws against straightforward numpy/python loops (float32: 1e-5 relative)."""

import numpy as np

from dao.recon import (
    PID,
    Combiner,
    HighPassFilter,
    IIRFilter,
    Integrator,
    PseudoOpenLoopIntegrator,
    clip,
)


def test_leaky_integrator_with_modal_gains_and_clip():
    rng = np.random.default_rng(0)
    g = rng.uniform(0.1, 0.6, 20)
    ctl = Integrator(20, gain=g, leak=0.98, stroke=0.5)
    c = np.zeros(20)
    for _ in range(30):
        e = rng.normal(0, 0.3, 20).astype(np.float32)
        out = ctl.step(e)
        c = np.clip(0.98 * c - g.astype(np.float32) * e, -0.5, 0.5)
        np.testing.assert_allclose(out, c, rtol=1e-5, atol=1e-6)
    assert out is ctl.command


def test_integrator_closes_loop_on_static_error():
    ctl = Integrator(3, gain=0.5)
    phase = np.array([1.0, -2.0, 0.5], np.float32)
    for _ in range(40):
        ctl.step(phase + ctl.command)  # residual = phase + command
    np.testing.assert_allclose(ctl.command, -phase, atol=1e-5)


def test_pid_matches_python():
    rng = np.random.default_rng(1)
    kp, ki, kd = 0.2, 0.3, 0.1
    ctl = PID(5, kp, ki, kd)
    integ = np.zeros(5)
    prev = np.zeros(5)
    for _ in range(10):
        e = rng.normal(size=5).astype(np.float32)
        integ += e
        ref = -(kp * e + ki * integ + kd * (e - prev))
        prev = e
        np.testing.assert_allclose(ctl.step(e), ref, rtol=1e-5, atol=1e-6)


def lfilter(b, a, x):
    y = np.zeros_like(x)
    for k in range(len(x)):
        acc = sum(b[j] * x[k - j] for j in range(len(b)) if k - j >= 0)
        acc -= sum(a[j] * y[k - j] for j in range(1, len(a)) if k - j >= 0)
        y[k] = acc / a[0]
    return y


def test_iir_orders_match_direct_form():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 4))
    for b, a in [([0.5], [1.0]), ([0.2, 0.3, 0.1], [1.0, -0.5, 0.2, -0.05]),
                 ([1.0, -1.0], [2.0, -1.6])]:
        f = IIRFilter(4, b, a)
        out = np.array([f.step(xi.astype(np.float32)).copy() for xi in x])
        ref = np.stack([lfilter(b, a, x[:, i]) for i in range(4)], axis=1)
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_iir_per_channel_coefficients():
    b = np.array([[0.1, 0.5], [0.0, 0.2]])  # (order, n)
    f = IIRFilter(2, b, [1.0])
    f.step(np.ones(2, np.float32))
    np.testing.assert_allclose(f.step(np.ones(2, np.float32)), [0.1, 0.7])


def test_high_pass_removes_dc_and_passes_fast_signal():
    hp = HighPassFilter(1, cutoff=1.0, rate=1000.0)
    for _ in range(5000):
        y = hp.step(np.ones(1, np.float32))
    assert abs(y[0]) < 1e-3
    hp.reset()
    t = np.arange(2000)
    xs = np.sin(2 * np.pi * 200 * t / 1000)
    ys = np.array([hp.step(np.array([v], np.float32))[0] for v in xs])
    assert 0.95 < ys[-500:].std() / xs[-500:].std() < 1.01


def test_pseudo_open_loop_equals_integrator_when_rd_is_identity():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(40, 10))
    r = np.linalg.pinv(d)
    pol = PseudoOpenLoopIntegrator(d, r, gain=0.4)
    integ = Integrator(10, gain=0.4)
    phase = rng.normal(size=10)
    for _ in range(25):
        s_pol = (d @ (phase + pol.command)).astype(np.float32)
        s_int = (d @ (phase + integ.command)).astype(np.float32)
        pol.step(s_pol)
        integ.step((r @ s_int).astype(np.float32))
        np.testing.assert_allclose(pol.command, integ.command, atol=2e-4)
    np.testing.assert_allclose(pol.command, -phase, atol=1e-3)


def test_clip_and_combiner():
    c = np.array([-2, -0.5, 0.5, 2], np.float32)
    lim = np.ones(4, np.float32)
    out = np.empty(4, np.float32)
    assert clip(c, -lim, lim, out) == 2
    np.testing.assert_array_equal(out, [-1, -0.5, 0.5, 1])
    comb = Combiner(4, ("loop", "offset", "turbulence"), stroke=1.0)
    comb["loop"] = [0.1, 0.2, 0.3, 0.9]
    comb["offset"] = 0.05
    comb["turbulence"] = [0, 0, 0, 0.5]
    comb.weights[2] = 0.0
    np.testing.assert_allclose(comb.combine(), [0.15, 0.25, 0.35, 0.95], rtol=1e-6)
    comb.weights[2] = 1.0
    comb.combine()
    assert comb.n_clipped == 1 and comb.output[3] == 1.0
