/* Fused SGLD steps for batches of TMS models x' = act(WᵀWx + b).
 *
 * The same update as `tms_slt.sampling.sgld.SGLD.update` with the analytic gradient of
 * `tms_slt.models.loss_and_grad` (Lau et al. 2023, arXiv 2308.12108):
 *
 *     w ← w − (ε/2)(nβ ∇L_m(w) + γ(w − w*) + δw) + √ε ξ,
 *     L_m = (1/B) Σ_s Σ_i I_i (act(z_i) − x_i)²,  z = WᵀWx + b,
 *
 * with the minibatch indices and the standard normals ξ drawn by the caller (torch, in the
 * eager path's order), so both paths follow the same trajectory up to float rounding.
 *
 * With spec.rmsprop, the RMSProp-preconditioned step of `sgld.RMSPropSGLD` (devinterp's
 * rmsprop_sgld), per coordinate, with V (P, m, n) and (P, n) kept by the caller across calls:
 *
 *     V ← αV + (1 − α) g²,  G = 1/(λ + √V),  w ← w − G·(ε/2)∇U(w) + √(εG) ξ,   g = ∇L_m(w).
 *
 * Why a C kernel: one chain-step of a 6-feature, 2-hidden model is ~15 kFLOP. Batched torch
 * ops stream (chain, feature, batch) intermediates through memory between tiny kernels;
 * here every intermediate of one model stays in L1, the batch is the innermost (SIMD)
 * loop, and one gathered minibatch serves every anchor that shares the chain's dataset
 * (the minibatch stream is common to all checkpoints of an instance).
 *
 * Built with -DTMS_M=m -DTMS_N=n (small models), the loss and gradient run on 8-sample
 * blocks held in vector registers (GCC/Clang vector extensions), with m and n known to
 * the compiler; otherwise a generic loop version runs.
 *
 * Layout (all row-major, contiguous): pair p = anchor·C + chain.
 *   W, W0: (P, m, n); b, b0: (P, n); importance: (A, n); eps, nbeta, gamma: (P,)
 *   data: (D·N, n); idx: (T, D, C, B) int64; noise_W: (T, P, m, n); noise_b: (T, P, n)
 *   V_W: (P, m, n), V_b: (P, n) (RMSProp only; NULL otherwise)
 *   loss_out, accept_out: (P, num_draws), written at columns t_offset .. t_offset + T − 1.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_LINEAR = 0, ACT_RELU = 1, ACT_SWISH = 2, ACT_GELU = 3 };

typedef struct {
    int64_t m, n, batch, rows_per_dataset, num_datasets, num_chains, num_pairs;
    int64_t num_draws, t_offset, num_steps;
    int32_t activation, sample_bias, mala, has_box, rmsprop;
    float sharpness, weight_decay, box, alpha, one_minus_alpha, stability;
} Spec;

/* act(z) − x into e; act'(z) into d (both length B). */
static void activate(const Spec *s, const float *z, const float *x, float *e, float *d) {
    const int64_t B = s->batch;
    switch (s->activation) {
    case ACT_LINEAR:
        for (int64_t k = 0; k < B; k++) { e[k] = z[k] - x[k]; d[k] = 1.0f; }
        break;
    case ACT_RELU:
        for (int64_t k = 0; k < B; k++) {
            const float pos = z[k] > 0.0f ? 1.0f : 0.0f;
            e[k] = pos * z[k] - x[k];
            d[k] = pos;
        }
        break;
    case ACT_SWISH:
        for (int64_t k = 0; k < B; k++) {
            const float sg = 1.0f / (1.0f + expf(-s->sharpness * z[k]));
            e[k] = z[k] * sg - x[k];
            d[k] = sg + s->sharpness * z[k] * sg * (1.0f - sg);
        }
        break;
    default: /* ACT_GELU, the exact (erf) form */
        for (int64_t k = 0; k < B; k++) {
            const float cdf = 0.5f * (1.0f + erff(z[k] * 0.70710678118654752f));
            const float pdf = expf(-0.5f * z[k] * z[k]) * 0.39894228040143268f;
            e[k] = z[k] * cdf - x[k];
            d[k] = cdf + z[k] * pdf;
        }
    }
}

typedef struct {
    float *h, *z, *e, *d, *G, *WG;
} Work;

/* L_m(W, b) on the minibatch xt (n, B), its gradients into gW (m, n) and gb (n). */
__attribute__((unused)) static float loss_and_grad_generic(const Spec *s, const float *W, const float *b,
                                   const float *imp, const float *xt, int64_t stride, Work *w,
                                   float *gW, float *gb) {
    const int64_t m = s->m, n = s->n, B = s->batch;
    for (int64_t j = 0; j < m; j++) {
        float *hj = w->h + j * B;
        memset(hj, 0, (size_t)B * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            const float wji = W[j * n + i];
            const float *xi = xt + i * stride;
            for (int64_t k = 0; k < B; k++) hj[k] += wji * xi[k];
        }
    }
    double loss = 0.0;
    const float two_over_b = 2.0f / (float)B;
    for (int64_t i = 0; i < n; i++) {
        float *zi = w->z;
        for (int64_t k = 0; k < B; k++) zi[k] = b[i];
        for (int64_t j = 0; j < m; j++) {
            const float wji = W[j * n + i];
            const float *hj = w->h + j * B;
            for (int64_t k = 0; k < B; k++) zi[k] += wji * hj[k];
        }
        activate(s, zi, xt + i * stride, w->e, w->d);
        const float c = two_over_b * imp[i];
        float *Gi = w->G + i * B;
        float sq = 0.0f, gbi = 0.0f;
        for (int64_t k = 0; k < B; k++) {
            sq += w->e[k] * w->e[k];
            Gi[k] = c * w->e[k] * w->d[k];
            gbi += Gi[k];
        }
        loss += (double)imp[i] * sq;
        gb[i] = gbi;
    }
    /* dL/dW[j, i] = Σ_k h[j, k] G[i, k] + Σ_k (WG)[j, k] x[i, k] */
    for (int64_t j = 0; j < m; j++) {
        float *wgj = w->WG + j * B;
        memset(wgj, 0, (size_t)B * sizeof(float));
        for (int64_t i = 0; i < n; i++) {
            const float wji = W[j * n + i];
            const float *Gi = w->G + i * B;
            for (int64_t k = 0; k < B; k++) wgj[k] += wji * Gi[k];
        }
        const float *hj = w->h + j * B;
        for (int64_t i = 0; i < n; i++) {
            const float *Gi = w->G + i * B, *xi = xt + i * stride;
            float acc = 0.0f;
            for (int64_t k = 0; k < B; k++) acc += hj[k] * Gi[k] + wgj[k] * xi[k];
            gW[j * n + i] = acc;
        }
    }
    return (float)(loss / (double)B);
}

#ifdef TMS_M
enum { M_ = TMS_M, N_ = TMS_N };
typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

static inline float hsum(v8 v) {
    float out = 0.0f;
    for (int l = 0; l < 8; l++) out += v[l];
    return out;
}

/* act(z) − x into *e and act'(z) into *d, one block of 8 samples. */
static inline void activate8(const Spec *s, v8 z, v8 x, v8 *e, v8 *d) {
    const v8 zero = {0}, one = zero + 1.0f;
    switch (s->activation) {
    case ACT_LINEAR:
        *e = z - x;
        *d = one;
        return;
    case ACT_RELU: {
        /* 0·z rather than a select, so a NaN z (a diverged chain) stays NaN. */
        const v8 pos = (v8)((z > zero) & (vi8)one);
        *e = pos * z - x;
        *d = pos;
        return;
    }
    default: {
        float zz[8], xx[8], ee[8], dd[8];
        Spec one_block = *s;
        one_block.batch = 8;
        memcpy(zz, &z, sizeof zz);
        memcpy(xx, &x, sizeof xx);
        activate(&one_block, zz, xx, ee, dd);
        memcpy(e, ee, sizeof ee);
        memcpy(d, dd, sizeof dd);
    }
    }
}

/* As loss_and_grad_generic for m = TMS_M, n = TMS_N: xt is (n, stride) with stride a
 * multiple of 8, 32-byte aligned, and zeros past column B (masked out of every sum). */
static float loss_and_grad_fixed(const Spec *s, const float *W, const float *b,
                                 const float *imp, const float *xt, int64_t stride, Work *w,
                                 float *gW, float *gb) {
    (void)w;
    const int64_t B = s->batch, blocks = stride / 8;
    const float two_over_b = 2.0f / (float)B;
    v8 acc_W[M_][N_], acc_b[N_], acc_loss = {0}, mask = {0};
    for (int l = 0; l < 8; l++) mask[l] = (blocks - 1) * 8 + l < B ? 1.0f : 0.0f;
    for (int i = 0; i < N_; i++) {
        acc_b[i] = acc_loss;
        for (int j = 0; j < M_; j++) acc_W[j][i] = acc_loss;
    }
    for (int64_t k = 0; k < blocks; k++) {
        v8 x[N_], h[M_], G[N_], WG[M_];
        for (int i = 0; i < N_; i++) x[i] = *(const v8 *)(xt + i * stride + 8 * k);
        for (int j = 0; j < M_; j++) {
            h[j] = W[j * N_] * x[0];
            for (int i = 1; i < N_; i++) h[j] += W[j * N_ + i] * x[i];
        }
        for (int i = 0; i < N_; i++) {
            v8 z = h[0] * W[i] + b[i], e, d;
            for (int j = 1; j < M_; j++) z += W[j * N_ + i] * h[j];
            activate8(s, z, x[i], &e, &d);
            if (k == blocks - 1) e *= mask;
            acc_loss += imp[i] * (e * e);
            G[i] = (two_over_b * imp[i]) * (e * d);
            acc_b[i] += G[i];
        }
        for (int j = 0; j < M_; j++) {
            WG[j] = W[j * N_] * G[0];
            for (int i = 1; i < N_; i++) WG[j] += W[j * N_ + i] * G[i];
            for (int i = 0; i < N_; i++) acc_W[j][i] += h[j] * G[i] + WG[j] * x[i];
        }
    }
    for (int i = 0; i < N_; i++) {
        gb[i] = hsum(acc_b[i]);
        for (int j = 0; j < M_; j++) gW[j * N_ + i] = hsum(acc_W[j][i]);
    }
    return hsum(acc_loss) / (float)B;
}
#define loss_and_grad loss_and_grad_fixed
#else
#define loss_and_grad loss_and_grad_generic
#endif

/* (ε/2)∇U for `len` coordinates: ∇U = nβ g + γ(w − w*) + δ w. */
static void drift(const Spec *s, int64_t len, const float *w, const float *w0, const float *g,
                  float half_eps, float nbeta, float gamma, float *out) {
    for (int64_t k = 0; k < len; k++)
        out[k] = half_eps * (nbeta * g[k] + gamma * (w[k] - w0[k]) + s->weight_decay * w[k]);
}

/* The RMSProp step for `len` coordinates from the drift dr = (ε/2)∇U and the gradient g:
 * V updated in place, then w − G·dr + √(εG) z with G = 1/(λ + √V). */
static void advance_rmsprop(const Spec *s, int64_t len, const float *w, const float *dr,
                            const float *g, const float *z, float eps, float *v, float *out) {
    for (int64_t k = 0; k < len; k++) {
        v[k] = s->alpha * v[k] + s->one_minus_alpha * (g[k] * g[k]);
        const float G = 1.0f / (sqrtf(v[k]) + s->stability);
        out[k] = w[k] - G * dr[k] + sqrtf(eps * G) * z[k];
    }
}

/* U(w) − nβ L = (γ/2)‖w − w*‖² + (δ/2)‖w‖², accumulated over `len` coordinates. */
static double prior_energy(const Spec *s, int64_t len, const float *w, const float *w0,
                           float gamma) {
    double out = 0.0;
    for (int64_t k = 0; k < len; k++) {
        const double dw = (double)w[k] - (double)w0[k];
        out += 0.5 * gamma * dw * dw + 0.5 * s->weight_decay * (double)w[k] * (double)w[k];
    }
    return out;
}

/* ‖to − from + drift_from‖² over `len` coordinates. */
static double proposal_sq(int64_t len, const float *to, const float *from, const float *dr) {
    double out = 0.0;
    for (int64_t k = 0; k < len; k++) {
        const double v = (double)to[k] - (double)from[k] + (double)dr[k];
        out += v * v;
    }
    return out;
}

/* tms_sgld_steps with `rmsprop` a compile-time constant: each sampler gets its own copy of
 * the loop, with no branch in it (and plain SGLD's code is what it was without RMSProp). */
__attribute__((always_inline)) static inline int steps(
    const Spec *s, int64_t chain, int64_t dataset, int64_t num_anchors, const int64_t *anchors,
    float *W, float *b, const float *W0, const float *b0, const float *importance,
    const double *eps, const double *nbeta, const double *gamma, const float *data,
    const int64_t *idx, const float *noise_W, const float *noise_b, float *loss_out,
    float *accept_out, float *V_W, float *V_b, const int rmsprop) {
    const int64_t m = s->m, n = s->n, B = s->batch, mn = s->m * s->n;
    const int64_t C = s->num_chains, P = s->num_pairs, D = s->num_datasets;
    const int64_t stride = (B + 7) / 8 * 8; /* xt rows padded with zeros to whole blocks */
    /* xt, h, z, e, d, G, WG; then gW, gb, new W, new b, drift W, drift b (and at w'). */
    size_t floats = (size_t)(n * stride + m * B + 3 * B + n * B + m * B + 6 * (mn + n));
    floats = (floats + 7) / 8 * 8;
    float *buf = aligned_alloc(32, floats * sizeof(float));
    if (buf == NULL) return -1;
    memset(buf, 0, floats * sizeof(float));
    float *xt = buf;
    Work w = {xt + n * stride, xt + n * stride + m * B, 0, 0, 0, 0};
    w.e = w.z + B;
    w.d = w.e + B;
    w.G = w.d + B;
    w.WG = w.G + n * B;
    float *gW = w.WG + m * B, *gb = gW + mn;
    float *nW = gb + n, *nb = nW + mn;
    float *dW = nb + n, *db = dW + mn;
    float *gW1 = db + n, *gb1 = gW1 + mn;
    float *dW1 = gb1 + n, *db1 = dW1 + mn;

    for (int64_t t = 0; t < s->num_steps; t++) {
        const int64_t *rows = idx + ((t * D + dataset) * C + chain) * B;
        const float *base = data + dataset * s->rows_per_dataset * n;
        for (int64_t k = 0; k < B; k++) {
            const float *row = base + rows[k] * n;
            for (int64_t i = 0; i < n; i++) xt[i * stride + k] = row[i];
        }
        for (int64_t q = 0; q < num_anchors; q++) {
            const int64_t a = anchors[q], p = a * C + chain;
            float *Wp = W + p * mn, *bp = b + p * n;
            const float *W0p = W0 + p * mn, *b0p = b0 + p * n, *imp = importance + a * n;
            const float half_eps = (float)(0.5 * eps[p]), root_eps = (float)sqrt(eps[p]);
            const float eps_p = (float)eps[p];
            float *vW = rmsprop ? V_W + p * mn : NULL, *vb = rmsprop ? V_b + p * n : NULL;
            const float nb_p = (float)nbeta[p], gam = (float)gamma[p];
            const float loss = loss_and_grad(s, Wp, bp, imp, xt, stride, &w, gW, gb);
            const float *zW = noise_W + (t * P + p) * mn, *zb = noise_b + (t * P + p) * n;

            drift(s, mn, Wp, W0p, gW, half_eps, nb_p, gam, dW);
            if (rmsprop)
                advance_rmsprop(s, mn, Wp, dW, gW, zW, eps_p, vW, nW);
            else
                for (int64_t k = 0; k < mn; k++) nW[k] = Wp[k] - dW[k] + root_eps * zW[k];
            if (s->sample_bias) {
                drift(s, n, bp, b0p, gb, half_eps, nb_p, gam, db);
                if (rmsprop)
                    advance_rmsprop(s, n, bp, db, gb, zb, eps_p, vb, nb);
                else
                    for (int64_t k = 0; k < n; k++) nb[k] = bp[k] - db[k] + root_eps * zb[k];
            } else {
                memcpy(nb, bp, (size_t)n * sizeof(float));
            }
            if (s->has_box) {
                for (int64_t k = 0; k < mn; k++)
                    nW[k] = fminf(fmaxf(nW[k], W0p[k] - s->box), W0p[k] + s->box);
                if (s->sample_bias)
                    for (int64_t k = 0; k < n; k++)
                        nb[k] = fminf(fmaxf(nb[k], b0p[k] - s->box), b0p[k] + s->box);
            }
            if (s->mala) {
                /* α = min(1, exp(U(w) − U(w') + log q(w|w') − log q(w'|w))), same batch. */
                const float loss1 = loss_and_grad(s, nW, nb, imp, xt, stride, &w, gW1, gb1);
                drift(s, mn, nW, W0p, gW1, half_eps, nb_p, gam, dW1);
                double u0 = (double)nb_p * loss + prior_energy(s, mn, Wp, W0p, gam);
                double u1 = (double)nb_p * loss1 + prior_energy(s, mn, nW, W0p, gam);
                double fwd = proposal_sq(mn, nW, Wp, dW), bwd = proposal_sq(mn, Wp, nW, dW1);
                if (s->sample_bias) {
                    drift(s, n, nb, b0p, gb1, half_eps, nb_p, gam, db1);
                    u0 += prior_energy(s, n, bp, b0p, gam);
                    u1 += prior_energy(s, n, nb, b0p, gam);
                    fwd += proposal_sq(n, nb, bp, db);
                    bwd += proposal_sq(n, bp, nb, db1);
                }
                double log_alpha = u0 - u1 + (fwd - bwd) / (2.0 * eps[p]);
                if (log_alpha > 0.0) log_alpha = 0.0;
                const double alpha = exp(log_alpha);
                accept_out[p * s->num_draws + s->t_offset + t] = isnan(alpha) ? 0.0f : (float)alpha;
            }
            memcpy(Wp, nW, (size_t)mn * sizeof(float));
            memcpy(bp, nb, (size_t)n * sizeof(float));
            loss_out[p * s->num_draws + s->t_offset + t] = loss;
        }
    }
    free(buf);
    return 0;
}

/* Advance the pairs (anchor, chain) for anchors[0..num_anchors) and one chain over
 * num_steps steps. All anchors here share `dataset`, so each step's minibatch is
 * gathered once. With s->rmsprop, the RMSProp step with V_W, V_b updated in place.
 * Returns 0, or −1 if the workspace cannot be allocated. */
int tms_sgld_steps(const Spec *s, int64_t chain, int64_t dataset, int64_t num_anchors,
                   const int64_t *anchors, float *W, float *b, const float *W0, const float *b0,
                   const float *importance, const double *eps, const double *nbeta,
                   const double *gamma, const float *data, const int64_t *idx,
                   const float *noise_W, const float *noise_b, float *loss_out,
                   float *accept_out, float *V_W, float *V_b) {
    if (s->rmsprop)
        return steps(s, chain, dataset, num_anchors, anchors, W, b, W0, b0, importance, eps,
                     nbeta, gamma, data, idx, noise_W, noise_b, loss_out, accept_out, V_W, V_b,
                     1);
    return steps(s, chain, dataset, num_anchors, anchors, W, b, W0, b0, importance, eps, nbeta,
                 gamma, data, idx, noise_W, noise_b, loss_out, accept_out, V_W, V_b, 0);
}
