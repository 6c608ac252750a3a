/* Fused training steps for batches of TMS models x' = act(WᵀWx + b).
 *
 * The same step as `tms_slt.training`'s torch path: the loss
 *
 *     L(W, b) = (1/B) Σ_s Σ_i I_i (act(z_si) − x_si)²,   z_s = WᵀW x_s + b,
 *
 * its exact gradient (as `tms_slt.models.loss_and_grad`: with h = Wx, e = act(z) − x,
 * G = (2/B) I ⊙ e ⊙ act'(z): dL/dW = h Gᵀ + (W G) xᵀ, dL/db = Σ_s G), and the update of
 * `torch.optim` (SGD with momentum, Adam, AdamW; L2 or decoupled weight decay), with the
 * minibatches drawn by the caller (torch, in the torch path's order), so both paths follow
 * the same trajectory up to float rounding.
 *
 * Why a C kernel: a step of a 6-feature, 2-hidden model is ~10 kFLOP, and torch spends
 * ~30 framework calls (autograd, optimizer, gathers) on it. Here each instance runs all of
 * its steps in one loop with its parameters, optimizer state and intermediates in L1,
 * the batch as the SIMD lanes, and nothing returns to Python until the call ends.
 *
 * Built with -DTMS_M=m -DTMS_N=n (small models), the loss and gradient run on blocks of
 * 8 samples with m and n known to the compiler (GCC/Clang vector extensions), the rows
 * transposed into lanes in registers where n ≤ 8 on AVX2. Otherwise a generic path runs
 * tiles of 64 samples through four small register-blocked matrix products (h = Wx,
 * z = Wᵀh, WG, and dW = [h, WG][G, x]ᵀ), the elementwise work fused into the second.
 *
 * Layout (row-major, contiguous): instance p of I.
 *   W: (I, m, n); b: (I, n); opt_W1, opt_W2: (I, m, n) and opt_b1, opt_b2: (I, n), the
 *   optimizer state (momentum or Adam's moments); importance: (T?, I?, n) by strides.
 *   Batches, by `batch_mode`:
 *     GATHER: rows idx (T, I, B) of the per-instance dataset data (I?, N, n), int16 or
 *             int32 (`index_bytes`): torch draws the same stream into either, and the
 *             narrower the type, the less memory the indices stream through;
 *     ROWS:   B consecutive rows of data, for step t at data + t·step_stride + p·data_stride;
 *     SPARSE: CSR over (T, I?, B) samples: ptr (T·I?·B + 1), feature (nnz), value (nnz).
 *   diverged: (I,) int64, the (global, 1-based) step whose loss was not finite, or 0.
 *   loss_out: (I,), written in `eval_only` mode (the loss of one batch, no update).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { ACT_LINEAR = 0, ACT_RELU = 1, ACT_SWISH = 2, ACT_GELU = 3 };
enum { OPT_SGD = 0, OPT_ADAM = 1, OPT_ADAMW = 2 };
enum { BATCH_GATHER = 0, BATCH_ROWS = 1, BATCH_SPARSE = 2 };

typedef struct {
    int64_t m, n, batch, num_instances, num_steps, step0;
    int64_t data_stride, step_stride, imp_stride, imp_step_stride, sparse_instances;
    double lr, weight_decay, momentum, beta1, beta2, eps;
    int32_t activation, optimizer, train_bias, batch_mode, eval_only, index_bytes;
    float sharpness;
} Spec;

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));

/* Where instance p's batch at step t comes from. */
typedef struct {
    const float *rows;                  /* GATHER: the dataset; ROWS: the first row */
    const int16_t *idx16;               /* GATHER: B row indices, int16 ... */
    const int32_t *idx32;               /* ... or int32 */
    const int64_t *ptr, *feature;       /* SPARSE: B + 1 offsets, feature of each entry */
    const float *value;                 /* SPARSE: value of each entry */
} Batch;

/* The dataset row of batch sample k (GATHER), or the k-th row (ROWS). */
static inline int64_t row_of(const Spec *s, const Batch *bt, int64_t k) {
    if (s->batch_mode != BATCH_GATHER) return k;
    return bt->idx16 ? (int64_t)bt->idx16[k] : (int64_t)bt->idx32[k];
}

static inline float hsum(v8 v) {
    float out = 0.0f;
    for (int l = 0; l < 8; l++) out += v[l];
    return out;
}

/* act(z) − x into *e and act'(z) into *d, 8 lanes. The exact (erf) GELU, as torch's. */
static inline __attribute__((always_inline)) void activate8(const Spec *s, int act, v8 z, v8 x,
                                                            v8 *e, v8 *d) {
    const v8 zero = {0}, one = zero + 1.0f;
    switch (act) {
    case ACT_LINEAR:
        *e = z - x;
        *d = one;
        return;
    case ACT_RELU: {
        /* 0·z rather than a select, so a NaN z (a diverged instance) stays NaN. */
        const v8 pos = (v8)((z > zero) & (vi8)one);
        *e = pos * z - x;
        *d = pos;
        return;
    }
    case ACT_SWISH:
        for (int l = 0; l < 8; l++) {
            const float sg = 1.0f / (1.0f + expf(-s->sharpness * z[l]));
            (*e)[l] = z[l] * sg - x[l];
            (*d)[l] = sg + s->sharpness * z[l] * sg * (1.0f - sg);
        }
        return;
    default:
        for (int l = 0; l < 8; l++) {
            const float cdf = 0.5f * (1.0f + erff(z[l] * 0.70710678118654752f));
            const float pdf = expf(-0.5f * z[l] * z[l]) * 0.39894228040143268f;
            (*e)[l] = z[l] * cdf - x[l];
            (*d)[l] = cdf + z[l] * pdf;
        }
    }
}

/* Samples k0 .. k0 + count of the batch into xt (rows(≥ n) × width, row stride `stride`,
 * feature-major), zeros elsewhere: the batch becomes the SIMD lanes. */
static void fill_xt(const Spec *s, const Batch *bt, int64_t k0, int64_t count, float *xt,
                    int64_t rows, int64_t width, int64_t stride) {
    const int64_t n = s->n;
    const int dense_full = s->batch_mode != BATCH_SPARSE && count == width;
    for (int64_t i = dense_full ? n : 0; i < rows; i++)
        memset(xt + i * stride, 0, (size_t)width * sizeof(float));
    if (s->batch_mode == BATCH_SPARSE) {
        for (int64_t k = 0; k < count; k++)
            for (int64_t q = bt->ptr[k0 + k]; q < bt->ptr[k0 + k + 1]; q++)
                xt[bt->feature[q] * stride + k] = bt->value[q];
        return;
    }
    for (int64_t k = 0; k < count; k++) {
        const int64_t r = row_of(s, bt, k0 + k);
        const float *row = bt->rows + r * n;
        for (int64_t i = 0; i < n; i++) xt[i * stride + k] = row[i];
    }
}

/* Per-thread scratch, 32-byte aligned. */
typedef struct {
    int64_t ld, mp, np;
    float *xt, *HW, *GX, *Wp, *Wt, *gW, *gb;
} Work;

#ifdef TMS_M
enum { M_ = TMS_M, N_ = TMS_N };

/* fill_xt for n = N_, unrolled: the transposing copy is a third of a step. */
static void fill_fixed(const Spec *s, const Batch *bt, int64_t k0, int64_t count, float *xt,
                       int64_t ld) {
    if (s->batch_mode == BATCH_SPARSE) {
        fill_xt(s, bt, k0, count, xt, N_, ld, ld);
        return;
    }
    for (int64_t k = 0; k < count; k++) {
        const float *row = bt->rows + row_of(s, bt, k0 + k) * N_;
        for (int i = 0; i < N_; i++) xt[i * ld + k] = row[i];
    }
    for (int64_t k = count; k < (count + 7) / 8 * 8; k++) /* the last block's spare lanes */
        for (int i = 0; i < N_; i++) xt[i * ld + k] = 0.0f;
}

/* One block of 8 samples (x: N_ lanes-vectors) into the accumulators. The parameters
 * come pre-broadcast (Wv = W[j, i] in every lane, ...), so the products read them as
 * memory operands instead of issuing a broadcast each; `mask` zeroes the spare lanes of
 * a partial last block. */
static inline __attribute__((always_inline)) void
block_fixed(const Spec *s, int act, const v8 Wv[M_][N_], const v8 bv[N_], const v8 impv[N_],
            const v8 cimpv[N_], const v8 x[N_], const v8 *mask, int grad, v8 aW[M_][N_],
            v8 ab[N_], v8 *al) {
    v8 h[M_], G[N_], WG[M_], loss = {0};
    for (int j = 0; j < M_; j++) {
        h[j] = Wv[j][0] * x[0];
        for (int i = 1; i < N_; i++) h[j] += Wv[j][i] * x[i];
    }
    for (int i = 0; i < N_; i++) {
        v8 z = h[0] * Wv[0][i] + bv[i], e, d;
        for (int j = 1; j < M_; j++) z += Wv[j][i] * h[j];
        activate8(s, act, z, x[i], &e, &d);
        if (mask) e *= *mask;
        loss += impv[i] * (e * e);
        G[i] = cimpv[i] * (e * d);
        ab[i] += G[i];
    }
    *al += loss;
    if (!grad) return;
    for (int j = 0; j < M_; j++) {
        WG[j] = Wv[j][0] * G[0];
        for (int i = 1; i < N_; i++) WG[j] += Wv[j][i] * G[i];
        for (int i = 0; i < N_; i++) aW[j][i] += h[j] * G[i] + WG[j] * x[i];
    }
}

#if defined(__AVX2__) && TMS_N <= 8
#include <immintrin.h>
#define ROWS_IN_REGISTERS 1
/* Eight rows of N_ ≤ 8 floats, transposed in registers into lanes-vectors x[0 .. N_):
 * masked loads (never past a row's end) and the 8 × 8 unpack/shuffle/permute transpose.
 * It replaces a scalar transposing copy that took as long as the arithmetic. */
static inline __attribute__((always_inline)) void load_rows(const float *const rows[8],
                                                           v8 x[N_]) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(N_),
                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256 r[8], t[8], u[8];
    for (int l = 0; l < 8; l++) r[l] = _mm256_maskload_ps(rows[l], mask);
    for (int l = 0; l < 8; l += 2) {
        t[l] = _mm256_unpacklo_ps(r[l], r[l + 1]);
        t[l + 1] = _mm256_unpackhi_ps(r[l], r[l + 1]);
    }
    for (int l = 0; l < 8; l += 4) {
        u[l] = _mm256_shuffle_ps(t[l], t[l + 2], 0x44);
        u[l + 1] = _mm256_shuffle_ps(t[l], t[l + 2], 0xEE);
        u[l + 2] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0x44);
        u[l + 3] = _mm256_shuffle_ps(t[l + 1], t[l + 3], 0xEE);
    }
    for (int i = 0; i < N_ && i < 4; i++) x[i] = (v8)_mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
    for (int i = 4; i < N_; i++) x[i] = (v8)_mm256_permute2f128_ps(u[i - 4], u[i], 0x31);
}
#else
#define ROWS_IN_REGISTERS 0
#endif

/* The batch loss; with `grad`, its gradient into w->gW (m × n) and w->gb (n). Blocks of 8
 * samples (the lanes), their rows transposed in registers or, for sparse batches, through
 * the xt tile; every accumulator lives across the blocks, one per feature for the loss
 * so that no chain of additions serializes a block. Inlined once per activation `act`,
 * a constant there. */
static inline __attribute__((always_inline)) double
loss_and_grad_act(const Spec *s, int act, const float *W, const float *b, const float *imp,
                  const Batch *bt, int64_t B, int grad, Work *w) {
    v8 aW[M_][N_], ab[N_], al, x[N_], Wv[M_][N_], bv[N_], impv[N_], cimpv[N_];
    const v8 zero = {0}, ones = zero + 1.0f;
    al = zero;
    for (int i = 0; i < N_; i++) {
        ab[i] = zero;
        bv[i] = zero + b[i];
        impv[i] = zero + imp[i];
        cimpv[i] = zero + (2.0f / (float)B) * imp[i];
        for (int j = 0; j < M_; j++) {
            aW[j][i] = zero;
            Wv[j][i] = zero + W[j * N_ + i];
        }
    }
    if (ROWS_IN_REGISTERS && s->batch_mode != BATCH_SPARSE) {
#if ROWS_IN_REGISTERS
        static const float zeros[8] = {0};
        for (int64_t k = 0; k < B; k += 8) {
            const float *rows[8];
            v8 mask = ones;
            for (int l = 0; l < 8; l++) {
                if (k + l < B) {
                    rows[l] = bt->rows + row_of(s, bt, k + l) * N_;
                } else {
                    rows[l] = zeros;
                    mask[l] = 0.0f;
                }
            }
            load_rows(rows, x);
            block_fixed(s, act, Wv, bv, impv, cimpv, x, k + 8 > B ? &mask : NULL, grad, aW, ab,
                        &al);
        }
#endif
    } else {
        for (int64_t k0 = 0; k0 < B; k0 += w->ld) {
            const int64_t count = B - k0 < w->ld ? B - k0 : w->ld, blocks = (count + 7) / 8;
            fill_fixed(s, bt, k0, count, w->xt, w->ld);
            for (int64_t k = 0; k < blocks; k++) {
                v8 mask = ones;
                for (int l = 0; l < 8; l++)
                    if (8 * k + l >= count) mask[l] = 0.0f;
                for (int i = 0; i < N_; i++) x[i] = *(const v8 *)(w->xt + i * w->ld + 8 * k);
                block_fixed(s, act, Wv, bv, impv, cimpv, x, 8 * (k + 1) > count ? &mask : NULL,
                            grad, aW, ab, &al);
            }
        }
    }
    for (int i = 0; i < N_; i++) {
        w->gb[i] = hsum(ab[i]);
        for (int j = 0; j < M_; j++) w->gW[j * N_ + i] = hsum(aW[j][i]);
    }
    return (double)hsum(al) / (double)B;
}
#else

/* C (M × L) = A (M × K) · Bm (K × L): M a multiple of 4, L of 8, rows 32-byte aligned. */
static void gemm_nn(int64_t M, int64_t K, int64_t L, const float *A, int64_t lda,
                    const float *Bm, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t r = 0; r < M; r += 4) {
        int64_t c = 0;
        for (; c + 16 <= L; c += 16) {
            v8 acc[4][2] = {{{0}}};
            for (int64_t q = 0; q < K; q++) {
                const v8 b0 = *(const v8 *)(Bm + q * ldb + c);
                const v8 b1 = *(const v8 *)(Bm + q * ldb + c + 8);
                for (int i = 0; i < 4; i++) {
                    const float a = A[(r + i) * lda + q];
                    acc[i][0] += a * b0;
                    acc[i][1] += a * b1;
                }
            }
            for (int i = 0; i < 4; i++) {
                *(v8 *)(C + (r + i) * ldc + c) = acc[i][0];
                *(v8 *)(C + (r + i) * ldc + c + 8) = acc[i][1];
            }
        }
        for (; c < L; c += 8) {
            v8 acc[4] = {{0}};
            for (int64_t q = 0; q < K; q++) {
                const v8 b0 = *(const v8 *)(Bm + q * ldb + c);
                for (int i = 0; i < 4; i++) acc[i] += A[(r + i) * lda + q] * b0;
            }
            for (int i = 0; i < 4; i++) *(v8 *)(C + (r + i) * ldc + c) = acc[i];
        }
    }
}

/* C (M × N) += A (M × L) · Bm (N × L)ᵀ: M a multiple of 2, N of 4, L of 8. */
static void gemm_nt(int64_t M, int64_t N, int64_t L, const float *A, int64_t lda,
                    const float *Bm, int64_t ldb, float *C, int64_t ldc) {
    for (int64_t r = 0; r < M; r += 2)
        for (int64_t c = 0; c < N; c += 4) {
            v8 acc[2][4] = {{{0}}};
            for (int64_t k = 0; k < L; k += 8) {
                const v8 a0 = *(const v8 *)(A + r * lda + k);
                const v8 a1 = *(const v8 *)(A + (r + 1) * lda + k);
                for (int i = 0; i < 4; i++) {
                    const v8 bv = *(const v8 *)(Bm + (c + i) * ldb + k);
                    acc[0][i] += a0 * bv;
                    acc[1][i] += a1 * bv;
                }
            }
            for (int i = 0; i < 4; i++) {
                C[r * ldc + c + i] += hsum(acc[0][i]);
                C[(r + 1) * ldc + c + i] += hsum(acc[1][i]);
            }
        }
}

/* The batch loss; with `grad`, its gradient into w->gW (m × n) and w->gb (n). Per tile of
 * ld samples: HW = [h, WG] (mp × 2ld), GX = [G, x] (np × 2ld), so dW is one product. */
static inline __attribute__((always_inline)) double
loss_and_grad_act(const Spec *s, int act, const float *W, const float *b, const float *imp,
                  const Batch *bt, int64_t B, int grad, Work *w) {
    const int64_t m = s->m, n = s->n, mp = w->mp, np = w->np, ld = w->ld, ld2 = 2 * ld;
    const float coef = 2.0f / (float)B;
    /* W padded to (mp, np) and transposed: zero rows and columns add nothing. */
    memset(w->Wp, 0, (size_t)(mp * np) * sizeof(float));
    memset(w->Wt, 0, (size_t)(np * mp) * sizeof(float));
    for (int64_t j = 0; j < m; j++)
        for (int64_t i = 0; i < n; i++) {
            w->Wp[j * np + i] = W[j * n + i];
            w->Wt[i * mp + j] = W[j * n + i];
        }
    if (grad) {
        memset(w->gW, 0, (size_t)(mp * np) * sizeof(float));
        memset(w->gb, 0, (size_t)np * sizeof(float));
    }
    v8 acc_loss = {0};
    for (int64_t k0 = 0; k0 < B; k0 += ld) {
        const int64_t count = B - k0 < ld ? B - k0 : ld;
        const int64_t L = (count + 7) / 8 * 8;
        v8 mask[ld / 8];
        for (int64_t c = 0; c < L; c += 8)
            for (int l = 0; l < 8; l++) mask[c / 8][l] = c + l < count ? 1.0f : 0.0f;
        fill_xt(s, bt, k0, count, w->GX + ld, np, ld, ld2); /* x into GX's right half */
        gemm_nn(mp, np, L, w->Wp, np, w->GX + ld, ld2, w->HW, ld2); /* h = W x */
        /* z = Wᵀh + b, computed four features at a time, then e, G and the loss. */
        for (int64_t i0 = 0; i0 < np; i0 += 4) {
            float *Z = w->GX + i0 * ld2; /* overwrites G's rows i0..i0+3 */
            gemm_nn(4, mp, L, w->Wt + i0 * mp, mp, w->HW, ld2, Z, ld2);
            for (int64_t i = i0; i < i0 + 4 && i < n; i++) {
                float *Gi = w->GX + i * ld2;
                const float *xi = Gi + ld;
                v8 gsum = {0};
                for (int64_t c = 0; c < L; c += 8) {
                    v8 z = *(v8 *)(Gi + c) + b[i], e, d;
                    activate8(s, act, z, *(const v8 *)(xi + c), &e, &d);
                    e *= mask[c / 8];
                    acc_loss += imp[i] * (e * e);
                    const v8 G = (coef * imp[i]) * (e * d);
                    *(v8 *)(Gi + c) = G;
                    gsum += G;
                }
                if (grad) w->gb[i] += hsum(gsum);
            }
            for (int64_t i = n > i0 ? n : i0; i < i0 + 4; i++)
                memset(w->GX + i * ld2, 0, (size_t)L * sizeof(float)); /* padded features */
        }
        if (!grad) continue;
        gemm_nn(mp, np, L, w->Wp, np, w->GX, ld2, w->HW + ld, ld2); /* WG = W G */
        if (L < ld) { /* columns L..ld of each half are stale: zero them for the NT product */
            const size_t stale = (size_t)(ld - L) * sizeof(float);
            for (int64_t r = 0; r < mp; r++) {
                memset(w->HW + r * ld2 + L, 0, stale);
                memset(w->HW + r * ld2 + ld + L, 0, stale);
            }
            for (int64_t r = 0; r < np; r++) {
                memset(w->GX + r * ld2 + L, 0, stale);
                memset(w->GX + r * ld2 + ld + L, 0, stale);
            }
        }
        gemm_nt(mp, np, ld2, w->HW, ld2, w->GX, ld2, w->gW, np); /* dW = h Gᵀ + (WG) xᵀ */
    }
    if (grad) /* compact (mp, np) to (m, n) in place: row j moves left, never overtaking */
        for (int64_t j = 0; j < m; j++)
            memmove(w->gW + j * n, w->gW + j * np, (size_t)n * sizeof(float));
    return (double)hsum(acc_loss) / (double)B;
}
#endif

/* loss_and_grad_act specialized to each activation. */
static double loss_and_grad(const Spec *s, const float *W, const float *b, const float *imp,
                            const Batch *bt, int64_t B, int grad, Work *w) {
    switch (s->activation) {
    case ACT_LINEAR: return loss_and_grad_act(s, ACT_LINEAR, W, b, imp, bt, B, grad, w);
    case ACT_RELU: return loss_and_grad_act(s, ACT_RELU, W, b, imp, bt, B, grad, w);
    case ACT_SWISH: return loss_and_grad_act(s, ACT_SWISH, W, b, imp, bt, B, grad, w);
    default: return loss_and_grad_act(s, ACT_GELU, W, b, imp, bt, B, grad, w);
    }
}

/* One torch.optim step on `len` coordinates w with gradient g; state s1, s2; step t ≥ 1. */
static void optimizer_step(const Spec *s, int64_t len, float *w, const float *g, float *s1,
                           float *s2, int64_t t) {
    const float lr = (float)s->lr, wd = (float)s->weight_decay;
    if (s->optimizer == OPT_SGD) {
        const float mom = (float)s->momentum;
        for (int64_t k = 0; k < len; k++) {
            float gk = wd != 0.0f ? g[k] + wd * w[k] : g[k];
            if (mom != 0.0f) gk = s1[k] = mom * s1[k] + gk; /* s1 = 0 at t = 1: buf = g */
            w[k] = w[k] + (-lr) * gk;
        }
        return;
    }
    /* Adam / AdamW, as torch's single-tensor loop (bias corrections in double). */
    const double bc1 = 1.0 - pow(s->beta1, (double)t), bc2 = 1.0 - pow(s->beta2, (double)t);
    const float neg_step = (float)(-(s->lr / bc1)), bc2_sqrt = (float)sqrt(bc2);
    const float w1 = (float)(1.0 - s->beta1), b2 = (float)s->beta2, w2 = (float)(1.0 - s->beta2);
    const float eps = (float)s->eps, decay = (float)(1.0 - s->lr * s->weight_decay);
    const int adamw = s->optimizer == OPT_ADAMW && s->weight_decay != 0.0;
    for (int64_t k = 0; k < len; k++) {
        float gk = g[k];
        if (adamw) w[k] *= decay;
        else if (wd != 0.0f) gk = gk + wd * w[k];
        s1[k] = s1[k] + w1 * (gk - s1[k]); /* lerp with weight < 0.5 */
        s2[k] = s2[k] * b2 + w2 * (gk * gk);
        const float denom = sqrtf(s2[k]) / bc2_sqrt + eps;
        w[k] = w[k] + neg_step * (s1[k] / denom);
    }
}

static int make_work(const Spec *s, Work *w) {
    const int64_t m = s->m, n = s->n;
    const int64_t B = s->batch;
#ifdef TMS_M
    w->ld = B >= 512 ? 512 : (B + 7) / 8 * 8; /* small models: the whole batch, one tile */
#else
    w->ld = B >= 64 ? 64 : (B + 7) / 8 * 8;
#endif
    w->mp = (m + 3) / 4 * 4;
    w->np = (n + 3) / 4 * 4;
    const size_t floats = (size_t)(w->np * w->ld                  /* xt */
                                   + w->mp * 2 * w->ld + w->np * 2 * w->ld /* HW, GX */
                                   + 3 * w->mp * w->np + w->np + 8 * 8);
    float *buf = aligned_alloc(32, (floats + 7) / 8 * 8 * sizeof(float));
    if (buf == NULL) return -1;
    memset(buf, 0, floats * sizeof(float));
    w->xt = buf;
    w->HW = w->xt + w->np * w->ld;
    w->GX = w->HW + w->mp * 2 * w->ld;
    w->Wp = w->GX + w->np * 2 * w->ld;
    w->Wt = w->Wp + w->mp * w->np;
    w->gW = w->Wt + w->mp * w->np;
    w->gb = w->gW + w->mp * w->np;
    return 0;
}

/* Instances first .. first + count: num_steps steps each (or, with eval_only, the loss of
 * one batch into loss_out). Each instance runs all its steps before the next starts, so
 * its parameters and optimizer state stay in L1. Returns 0, or −1 if the workspace
 * cannot be allocated. */
int tms_train_steps(const Spec *s, int64_t first, int64_t count, float *W, float *b,
                    float *opt_W1, float *opt_W2, float *opt_b1, float *opt_b2,
                    const float *importance, const float *data, const void *idx,
                    const int64_t *ptr, const int64_t *feature, const float *value,
                    int64_t *diverged, float *loss_out) {
    const int64_t m = s->m, n = s->n, mn = m * n, B = s->batch, I = s->num_instances;
    Work w;
    if (make_work(s, &w)) return -1;
    for (int64_t p = first; p < first + count; p++) {
        float *Wp = W + p * mn, *bp = b + p * n;
        for (int64_t t = 0; t < s->num_steps; t++) {
            if (!s->eval_only && diverged[p]) break;
            Batch bt = {0};
            const int64_t shared = s->sparse_instances == 1 ? 0 : p;
            if (s->batch_mode == BATCH_GATHER) {
                bt.rows = data + p * s->data_stride;
                const int64_t at = (t * I + p) * B;
                if (s->index_bytes == 2) bt.idx16 = (const int16_t *)idx + at;
                else bt.idx32 = (const int32_t *)idx + at;
            } else if (s->batch_mode == BATCH_ROWS) {
                bt.rows = data + t * s->step_stride + p * s->data_stride;
            } else {
                bt.ptr = ptr + (t * s->sparse_instances + shared) * B;
                bt.feature = feature;
                bt.value = value;
            }
            const float *imp = importance + t * s->imp_step_stride + p * s->imp_stride;
            const double loss = loss_and_grad(s, Wp, bp, imp, &bt, B, !s->eval_only, &w);
            if (s->eval_only) {
                loss_out[p] = (float)loss;
                break;
            }
            if (!isfinite(loss)) {
                diverged[p] = s->step0 + t + 1;
                break;
            }
            const int64_t step = s->step0 + t + 1;
            optimizer_step(s, mn, Wp, w.gW, opt_W1 + p * mn, opt_W2 + p * mn, step);
            if (s->train_bias) optimizer_step(s, n, bp, w.gb, opt_b1 + p * n, opt_b2 + p * n, step);
        }
    }
    free(w.xt);
    return 0;
}
