/* Fused CPU loops for goodsam's fast mask generator (goodsam/sam/native.py builds and loads this).
 *
 * Each function does in one pass over memory what takes PyTorch several passes of elementwise
 * operations; the formulas are the same in float32, so results agree with the PyTorch path up to
 * float rounding. Arrays are float32 and C-contiguous unless a stride is passed; everything is
 * single-threaded (the caller runs one worker per core). Written with GCC/Clang vector extensions
 * (16 floats), which compile to AVX-512, AVX2 or SSE depending on the machine.
 */
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#define W 16            /* floats per vector */
#define FLOOR (-70.0f)  /* exponents below this are floored: e^-70 is invisible next to 1 in float32 */

static inline v16 load(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, v16 v) { memcpy(p, &v, sizeof v); }
static inline v16 splat(float x) { return (v16){0} + x; } /* note: splat(-0.0f) is +0 */
static inline v16 vmax(v16 a, v16 b) { v16i m = a > b; return (v16)(((v16i)a & m) | ((v16i)b & ~m)); }

/* e^x for x <= 0, floored at e^-70 (a normal float). Cephes' single-precision polynomial on
 * r = x - n ln2, n = round(x / ln2): within 2 ulp of the exact value. */
static inline v16 vexp(v16 x) {
    x = vmax(x, splat(FLOOR));
    const v16 magic = splat(12582912.0f); /* 1.5 * 2^23: adding it rounds to an integer */
    v16 n = (x * 1.44269504088896341f + magic) - magic;
    v16 r = x - n * 0.693359375f;
    r = r + n * 2.12194440e-4f;
    v16 p = splat(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    v16i bits = (__builtin_convertvector(n, v16i) + 127) << 23;
    return p * (v16)bits;
}

static inline float sexp(float x) { /* scalar version, for tails */
    float in[W] = {0}, out[W];
    in[0] = x;
    store(out, vexp(load(in)));
    return out[0];
}

/* One vector of tokens r .. r + 15 of head h: out rows (b, h, t) for every b and t, from the C = 16
 * columns p[h, :, r..] held in registers; with T and C constants after inlining, the loops unroll
 * and the T accumulators are independent chains. pass 0 writes (x + add) * scale, pass 1 adds. */
static inline __attribute__((always_inline)) void head_block(
        const float *p, int64_t ld, int h, int r, int R, int H, const float *k, int B, const int T,
        const float *add, int64_t add_bs, const float *scale, int64_t scale_bs, float *out, int pass) {
    enum { C = 16 };
    v16 col[C];
#pragma GCC unroll 16
    for (int c = 0; c < C; c++) col[c] = load(p + ((int64_t)h * C + c) * ld + r);
    for (int b = 0; b < B; b++) {
        const float *kb = k + ((int64_t)b * H + h) * T * C;
        v16 x[8];
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) x[t] = (v16){0};
#pragma GCC unroll 16
        for (int c = 0; c < C; c++)
#pragma GCC unroll 8
            for (int t = 0; t < T; t++) x[t] += kb[t * C + c] * col[c];
        v16 sv = scale && !pass ? load(scale + b * scale_bs + r) : splat(1.0f);
#pragma GCC unroll 8
        for (int t = 0; t < T; t++) {
            int64_t row = (int64_t)h * T + t;
            float *o = out + ((int64_t)b * H * T + row) * R + r;
            if (pass) store(o, load(o) + x[t]);
            else store(o, (add ? x[t] + load(add + b * add_bs + row * R + r) : x[t]) * sv);
        }
    }
}

/* out[b, h*T + t, r] = scale[b, r] * (sum_c k[b, h, t, c] * p1[h, c, r] + add[b, h*T + t, r])
 *                      + sum_c k[b, h, t, c] * p2[h, c, r]
 * p1, p2: (H, C, ld) per-image columns, already offset to the tile's first token; R tokens.
 * add (batch stride add_bs, row stride R), scale (batch stride scale_bs) and p2 may be NULL. */
void head_products(const float *p1, const float *p2, int64_t ld, int R, int H, int C,
                   const float *k, int B, int T, const float *add, int64_t add_bs,
                   const float *scale, int64_t scale_bs, float *out) {
    for (int h = 0; h < H; h++) {
        int r = 0;
        if (C == 16 && (T == 7 || T == 4))
            for (; r + W <= R; r += W)
                for (int pass = 0; pass < (p2 ? 2 : 1); pass++) {
                    const float *p = pass ? p2 : p1;
                    if (T == 7) head_block(p, ld, h, r, R, H, k, B, 7, add, add_bs, scale, scale_bs, out, pass);
                    else head_block(p, ld, h, r, R, H, k, B, 4, add, add_bs, scale, scale_bs, out, pass);
                }
        for (; r < R; r++)
            for (int b = 0; b < B; b++)
                for (int t = 0; t < T; t++) {
                    const float *kv = k + (((int64_t)b * H + h) * T + t) * C;
                    int64_t row = (int64_t)h * T + t;
                    float x = 0.0f, y = 0.0f;
                    for (int c = 0; c < C; c++) x += kv[c] * p1[((int64_t)h * C + c) * ld + r];
                    if (p2)
                        for (int c = 0; c < C; c++) y += kv[c] * p2[((int64_t)h * C + c) * ld + r];
                    if (add) x += add[b * add_bs + row * R + r];
                    if (scale) x *= scale[b * scale_bs + r];
                    out[((int64_t)b * H * T + row) * R + r] = x + y;
                }
    }
}

/* In place softmax over the T tokens of each head: x (B, H, T, R), along T for every r. */
void softmax_heads(float *x, int B, int H, int T, int R) {
    for (int64_t g = 0; g < (int64_t)B * H; g++) {
        float *base = x + g * T * R;
        int r = 0;
        for (; r + W <= R; r += W) {
            v16 m = load(base + r);
            for (int t = 1; t < T; t++) m = vmax(m, load(base + (int64_t)t * R + r));
            v16 sum = {0};
            for (int t = 0; t < T; t++) {
                v16 e = vexp(load(base + (int64_t)t * R + r) - m);
                store(base + (int64_t)t * R + r, e);
                sum += e;
            }
            v16 inv = 1.0f / sum;
            for (int t = 0; t < T; t++) store(base + (int64_t)t * R + r, load(base + (int64_t)t * R + r) * inv);
        }
        for (; r < R; r++) {
            float m = base[r], sum = 0.0f;
            for (int t = 1; t < T; t++) m = base[(int64_t)t * R + r] > m ? base[(int64_t)t * R + r] : m;
            for (int t = 0; t < T; t++) sum += (base[(int64_t)t * R + r] = sexp(base[(int64_t)t * R + r] - m));
            for (int t = 0; t < T; t++) base[(int64_t)t * R + r] /= sum;
        }
    }
}

static inline float hmax(v16 v) {
    float x[W], m;
    store(x, v);
    m = x[0];
    for (int j = 1; j < W; j++) m = x[j] > m ? x[j] : m;
    return m;
}

static inline float hsum(v16 v) {
    float x[W], s = 0.0f;
    store(x, v);
    for (int j = 0; j < W; j++) s += x[j];
    return s;
}

/* Online softmax step over a tile of image tokens, per query row: scores (B, Q, R) -> in place
 * exp(scores - new_max) (floored), with running max (B, Q) and sum (B, Q) updated and the factor
 * exp(old_max - new_max) by which earlier accumulations must be multiplied written to rescale (B, Q).
 * first != 0 starts the running values. Each row is then multiplied by weight[b, r] (batch stride
 * weight_bs) when weight is not NULL (the running sum is taken before). */
void online_softmax(float *scores, int B, int Q, int R, float *run_max, float *run_sum, float *rescale,
                    int first, const float *weight, int64_t weight_bs) {
    for (int b = 0; b < B; b++)
        for (int q = 0; q < Q; q++) {
            int64_t i = (int64_t)b * Q + q;
            float *row = scores + i * R;
            const float *w = weight ? weight + b * weight_bs : NULL;
            float m = row[0];
            int r = 0;
            if (R >= W) {
                v16 vm = load(row);
                for (r = W; r + W <= R; r += W) vm = vmax(vm, load(row + r));
                m = hmax(vm);
            }
            for (; r < R; r++) m = row[r] > m ? row[r] : m;
            float new_max = first ? m : (m > run_max[i] ? m : run_max[i]);
            v16 vs = {0};
            float s = 0.0f;
            for (r = 0; r + W <= R; r += W) {
                v16 e = vexp(load(row + r) - new_max);
                vs += e;
                store(row + r, w ? e * load(w + r) : e);
            }
            for (; r < R; r++) {
                float e = sexp(row[r] - new_max);
                s += e;
                row[r] = w ? e * w[r] : e;
            }
            s += hsum(vs);
            if (first) {
                rescale[i] = 1.0f;
                run_sum[i] = s;
            } else {
                float f = sexp(run_max[i] - new_max);
                rescale[i] = f;
                run_sum[i] = run_sum[i] * f + s;
            }
            run_max[i] = new_max;
        }
}

/* Stability counts of masks given as column-resized low-res logits cols (n, K, X): output row y is
 * sum_j weights[y, j] * cols[:, start[y] + j, :] (taps weights per row: SAM's resizing along the
 * rows); the numbers of its values above hi and above lo go to count_hi and count_lo (n,). */
void stability_counts(const float *cols, int n, int K, int X, const int32_t *start, const float *weights,
                      int H, int taps, float hi, float lo, int32_t *count_hi, int32_t *count_lo) {
    for (int i = 0; i < n; i++) {
        const float *m = cols + (int64_t)i * K * X;
        v16i vh = {0}, vl = {0};
        int64_t above_hi = 0, above_lo = 0;
        for (int y = 0; y < H; y++) {
            const float *w = weights + (int64_t)y * taps;
            const float *src = m + (int64_t)start[y] * X;
            int x = 0;
            for (; x + W <= X; x += W) {
                v16 v = w[0] * load(src + x);
                for (int j = 1; j < taps; j++) v += w[j] * load(src + (int64_t)j * X + x);
                vh -= (v16i)(v > hi);
                vl -= (v16i)(v > lo);
            }
            for (; x < X; x++) {
                float v = w[0] * src[x];
                for (int j = 1; j < taps; j++) v += w[j] * src[(int64_t)j * X + x];
                above_hi += v > hi;
                above_lo += v > lo;
            }
        }
        int32_t ch[W], cl[W];
        memcpy(ch, &vh, sizeof ch);
        memcpy(cl, &vl, sizeof cl);
        for (int j = 0; j < W; j++) { above_hi += ch[j]; above_lo += cl[j]; }
        count_hi[i] = (int32_t)above_hi;
        count_lo[i] = (int32_t)above_lo;
    }
}

/* Layer-0 LayerNorm statistics from the factored update (see fast_decoder.py):
 * var = (r_sq + 2 (r_b + sum_i a_i o_i) + sum_i a_i m_i) / dim, s = 1 / sqrt(var + eps), x_i = a_i * s,
 * and qg = sum_i a_i m[gg_row + i]. a, o: (B, Q, R); m: (B, *, R) batch stride m_bs; r_sq, r_b: (R,);
 * s to s_out (batch stride s_bs), x to x_out (batch stride x_bs, row stride ld), qg to q_out. */
void layer0_stats(const float *a, const float *o, const float *m, int64_t m_bs, int B, int Q, int R,
                  const float *r_sq, const float *r_b, float dim, float eps,
                  float *s_out, int64_t s_bs, float *x_out, int64_t x_bs, int64_t ld,
                  int64_t gg_row, float *q_out, int64_t q_bs) {
    for (int b = 0; b < B; b++) {
        const float *ab = a + (int64_t)b * Q * R, *ob = o + (int64_t)b * Q * R, *mb = m + b * m_bs;
        for (int r = 0; r < R; r += W) {
            int n = R - r < W ? R - r : W;
            float t1[W], t2[W], t3[W], t4[W];
            v16 acc4[4] = {{0}}, qg4[4] = {{0}};
            for (int i = 0; i < Q; i++) {
                const float *pa = ab + (int64_t)i * R + r, *po = ob + (int64_t)i * R + r;
                const float *pm = mb + (int64_t)i * R + r, *pg = mb + (gg_row + i) * R + r;
                v16 av, ov, mv, gv;
                if (n == W) { av = load(pa); ov = load(po); mv = load(pm); gv = load(pg); }
                else {
                    memset(t1, 0, sizeof t1); memset(t2, 0, sizeof t2); memset(t3, 0, sizeof t3);
                    memset(t4, 0, sizeof t4);
                    memcpy(t1, pa, n * 4); memcpy(t2, po, n * 4); memcpy(t3, pm, n * 4); memcpy(t4, pg, n * 4);
                    av = load(t1); ov = load(t2); mv = load(t3); gv = load(t4);
                }
                acc4[i & 3] += av * (2.0f * ov + mv);
                qg4[i & 3] += av * gv;
            }
            v16 acc = (acc4[0] + acc4[1]) + (acc4[2] + acc4[3]), qg = (qg4[0] + qg4[1]) + (qg4[2] + qg4[3]);
            memset(t1, 0, sizeof t1); memset(t2, 0, sizeof t2);
            memcpy(t1, r_sq + r, n * 4);
            memcpy(t2, r_b + r, n * 4);
            v16 var = (load(t1) + 2.0f * load(t2) + acc) / dim + eps;
            float vv[W], sv[W], qv[W];
            store(vv, var);
            store(qv, qg);
            for (int j = 0; j < W; j++) sv[j] = 1.0f / __builtin_sqrtf(vv[j]);
            memcpy(s_out + b * s_bs + r, sv, n * 4);
            memcpy(q_out + b * q_bs + r, qv, n * 4);
            v16 s = load(sv);
            for (int i = 0; i < Q; i++) {
                float *dst = x_out + b * x_bs + (int64_t)i * ld + r;
                const float *src = ab + (int64_t)i * R + r;
                if (n == W) store(dst, load(src) * s);
                else for (int j = 0; j < n; j++) dst[j] = src[j] * sv[j];
            }
        }
    }
}

/* Layer-1 LayerNorm statistics from the factored update (see fast_decoder.py), per token:
 * var = s0 (s0 (rg_sq + qg) + 2 rg_beta + 2 [sum_{i<Q} x_i (y0_i + g_b - g_sum mv_i)
 *       + sum_{i<Q} x_{Q+i} (y1_i + o_b)]) + sum_{i<Q} x_{Q+i} m_i + 2 m_Q + beta_sq,
 * s1 = 1 / sqrt(var / dim + eps). x: (B, 2Q, R) batch stride x_bs, row stride ld; y0, y1: (B, Q, R);
 * m: (B, >Q, R) batch stride m_bs; s0, qg: rows of R (batch stride s_bs), s1 written likewise;
 * rg_sq, rg_beta, g_b, g_sum, o_b: (R,); mv: (B, Q). */
void layer1_stats(const float *x, int64_t x_bs, int64_t ld, const float *y0, const float *y1,
                  const float *m, int64_t m_bs, const float *s0, float *s1, const float *qg, int64_t s_bs,
                  int B, int Q, int R, const float *rg_sq, const float *rg_beta, const float *g_b,
                  const float *g_sum, const float *o_b, const float *mv, float beta_sq, float dim, float eps) {
    float buf[9][W];
    for (int b = 0; b < B; b++) {
        const float *xb = x + b * x_bs, *mb = m + b * m_bs;
        const float *y0b = y0 + (int64_t)b * Q * R, *y1b = y1 + (int64_t)b * Q * R;
        for (int r = 0; r < R; r += W) {
            int n = R - r < W ? R - r : W;
            memset(buf, 0, sizeof buf);
            memcpy(buf[0], rg_sq + r, n * 4); memcpy(buf[1], rg_beta + r, n * 4);
            memcpy(buf[2], g_b + r, n * 4); memcpy(buf[3], g_sum + r, n * 4);
            memcpy(buf[4], o_b + r, n * 4); memcpy(buf[5], s0 + b * s_bs + r, n * 4);
            memcpy(buf[7], qg + b * s_bs + r, n * 4);
            memcpy(buf[8], mb + (int64_t)Q * R + r, n * 4);
            v16 gb = load(buf[2]), gs = load(buf[3]), ob = load(buf[4]);
            v16 lin4[4] = {{0}}, quad4[4] = {{0}};
            for (int i = 0; i < Q; i++) {
                const float *x0s = xb + (int64_t)i * ld + r, *x1s = xb + (int64_t)(Q + i) * ld + r;
                const float *y0s = y0b + (int64_t)i * R + r, *y1s = y1b + (int64_t)i * R + r;
                const float *ms = mb + (int64_t)i * R + r;
                v16 x0v, x1v, y0v, y1v, mv_;
                if (n == W) { x0v = load(x0s); x1v = load(x1s); y0v = load(y0s); y1v = load(y1s); mv_ = load(ms); }
                else {
#define TAIL(dst, src) do { memset(buf[6], 0, sizeof buf[6]); memcpy(buf[6], src, n * 4); dst = load(buf[6]); } while (0)
                    TAIL(x0v, x0s); TAIL(x1v, x1s); TAIL(y0v, y0s); TAIL(y1v, y1s); TAIL(mv_, ms);
#undef TAIL
                }
                lin4[i & 3] += x0v * (y0v + gb - gs * mv[(int64_t)b * Q + i]) + x1v * (y1v + ob);
                quad4[i & 3] += x1v * mv_;
            }
            v16 lin = (lin4[0] + lin4[1]) + (lin4[2] + lin4[3]), quad = (quad4[0] + quad4[1]) + (quad4[2] + quad4[3]);
            v16 s0v = load(buf[5]);
            v16 var = s0v * (s0v * (load(buf[0]) + load(buf[7])) + 2.0f * load(buf[1]) + 2.0f * lin) + quad
                      + 2.0f * load(buf[8]) + beta_sq;
            var = var / dim + eps;
            float vv[W];
            store(vv, var);
            for (int j = 0; j < n; j++) s1[b * s_bs + r + j] = 1.0f / __builtin_sqrtf(vv[j]);
        }
    }
}
/* r[i] = sum of the 16 lanes of v[i], for i < 16: a butterfly of 15 half-swaps and adds (each level
 * pairs the vectors and halves the lanes per vector). Plain sums where the shuffle builtin is missing. */
static inline v16 sum16(const v16 *v) {
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)
    v16 c[8], d[4], e[2];
    for (int k = 0; k < 8; k++)
        c[k] = __builtin_shufflevector(v[2 * k], v[2 * k + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
             + __builtin_shufflevector(v[2 * k], v[2 * k + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int k = 0; k < 4; k++)
        d[k] = __builtin_shufflevector(c[2 * k], c[2 * k + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
             + __builtin_shufflevector(c[2 * k], c[2 * k + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int k = 0; k < 2; k++)
        e[k] = __builtin_shufflevector(d[2 * k], d[2 * k + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)
             + __builtin_shufflevector(d[2 * k], d[2 * k + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return __builtin_shufflevector(e[0], e[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
         + __builtin_shufflevector(e[0], e[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#else
    float r[W];
    for (int i = 0; i < W; i++) r[i] = hsum(v[i]);
    return load(r);
#endif
}

/* Mask logits of the upscaler's output rows, straight into the image's pixel layout: z (B, rows, gw,
 * 4, 4, 32) holds per image token its 4 sub-pixels (a, b) = (s >> 1, s & 1), each with 4 sub-sub-pixels
 * (a', b') likewise, of 32 channels; out[b, m, 4 (y0 + y) + 2a + a', 4x + 2b + b'] = hyper[b, m] . z
 * row. hyper: (B, M, 32); out: (B, M, H4, W4). */
void hyper_masks(const float *z, const float *hyper, int B, int M, int rows, int gw, float *out, int H4, int W4,
                 int y0) {
    enum { C = 32 };
    int src_row[W]; /* output pixel (4 rows x 4 columns of a token) -> z row (s * 4 + s') */
    for (int i = 0; i < W; i++) {
        int a = i >> 3, a2 = (i >> 2) & 1, bb = (i >> 1) & 1, b2 = i & 1;
        src_row[i] = (2 * a + bb) * 4 + 2 * a2 + b2;
    }
    for (int b = 0; b < B; b++)
        for (int m = 0; m < M; m++) {
            const float *h = hyper + ((int64_t)b * M + m) * C;
            v16 h0 = load(h), h1 = load(h + W);
            float *plane = out + ((int64_t)b * M + m) * H4 * W4;
            for (int y = 0; y < rows; y++)
                for (int x = 0; x < gw; x++) {
                    const float *zt = z + ((((int64_t)b * rows + y) * gw + x) * 16) * C;
                    v16 v[W];
                    for (int i = 0; i < W; i++) {
                        const float *row = zt + src_row[i] * C;
                        v[i] = load(row) * h0 + load(row + W) * h1;
                    }
                    float r[W];
                    store(r, sum16(v));
                    float *dst = plane + (int64_t)(4 * (y0 + y)) * W4 + 4 * x;
                    for (int k = 0; k < 4; k++) memcpy(dst + (int64_t)k * W4, r + 4 * k, 4 * sizeof(float));
                }
        }
}

/* Binary masks and their boxes from column-resized low-res logits (as in stability_counts): pixel
 * (y, x) is on where sum_j weights[y, j] * cols[:, start[y] + j, x] > thr; mask (n, H, X) gets 0/1
 * bytes and boxes (n, 4) the inclusive box (left, top, right, bottom), zeros for an empty mask. */
void threshold_masks(const float *cols, int n, int K, int X, const int32_t *start, const float *weights,
                     int H, int taps, float thr, uint8_t *mask, int64_t *boxes) {
    for (int i = 0; i < n; i++) {
        const float *m = cols + (int64_t)i * K * X;
        uint8_t *out = mask + (int64_t)i * H * X;
        int top = H, bottom = -1, left = X, right = -1;
        for (int y = 0; y < H; y++) {
            const float *w = weights + (int64_t)y * taps;
            const float *src = m + (int64_t)start[y] * X;
            uint8_t *row = out + (int64_t)y * X;
            int any = 0;
            for (int x = 0; x < X; x++) {
                float v = w[0] * src[x];
                for (int j = 1; j < taps; j++) v += w[j] * src[(int64_t)j * X + x];
                row[x] = v > thr;
            }
            for (int x = 0; x < X; x++)
                if (row[x]) { any = 1; if (x < left) left = x; break; }
            if (!any) continue;
            for (int x = X - 1; x >= 0; x--)
                if (row[x]) { if (x > right) right = x; break; }
            if (y < top) top = y;
            bottom = y;
        }
        int64_t *box = boxes + (int64_t)i * 4;
        if (bottom < 0) box[0] = box[1] = box[2] = box[3] = 0;
        else { box[0] = left; box[1] = top; box[2] = right; box[3] = bottom; }
    }
}

/* Resize along the last axis: out[i, y, x] = sum_j weights[x, j] * src[i, y, start[x] + j] for
 * src (n, K, X0) and out (n, K, X) (taps weights per output column: SAM's resizing along the columns). */
void resize_cols(const float *src, int n, int K, int X0, const int32_t *start, const float *weights, int X,
                 int taps, float *out) {
    for (int64_t row = 0; row < (int64_t)n * K; row++) {
        const float *s = src + row * X0;
        float *o = out + row * X;
        for (int x = 0; x < X; x++) {
            const float *w = weights + (int64_t)x * taps;
            const float *p = s + start[x];
            float v = w[0] * p[0];
            for (int j = 1; j < taps; j++) v += w[j] * p[j];
            o[x] = v;
        }
    }
}

/* The upscaler's first step after its linear part, per image token (see fast_decoder.py, masks):
 * v = cst + s1 * (y + beta + s0 * up) over the 4 * C1 channels (4 sub-pixels of C1 channels), then
 * each sub-pixel's C1 channels LayerNorm-ed (mean and variance over them, + eps) and scaled by lnw,
 * shifted by lnb. y: (B, rows * w, 4 * C1); beta: (B, 4 * C1) rows of batch stride beta_bs; up:
 * (rows * w, 4 * C1); s0, s1: (B, rows * w) rows of batch stride s_bs; out: (B, rows, gw, 4, C1), only
 * the first gw tokens of each grid row (the rest is padding). */
void up_norm(const float *y, const float *beta, int64_t beta_bs, int B, int rows, int w, int gw,
             const float *s0, const float *s1, int64_t s_bs, const float *up, const float *cst,
             const float *lnw, const float *lnb, float eps, int C1, float *out) {
    const int C = 4 * C1;
    float v[C];
    for (int b = 0; b < B; b++)
        for (int yy = 0; yy < rows; yy++)
            for (int x = 0; x < gw; x++) {
                int64_t tok = (int64_t)yy * w + x;
                const float *yt = y + ((int64_t)b * rows * w + tok) * C, *ut = up + tok * C;
                const float *bt = beta + b * beta_bs;
                float a = s0[b * s_bs + tok], s = s1[b * s_bs + tok];
                float *o = out + (((int64_t)b * rows + yy) * gw + x) * C;
                int c = 0;
                for (; c + W <= C; c += W)
                    store(v + c, load(cst + c) + s * (load(yt + c) + load(bt + c) + a * load(ut + c)));
                for (; c < C; c++) v[c] = cst[c] + s * (yt[c] + bt[c] + a * ut[c]);
                for (int g = 0; g < 4; g++) {
                    const float *vg = v + g * C1;
                    float *og = o + g * C1;
                    float sum = 0.0f, sq = 0.0f;
                    int k = 0;
                    if (C1 % W == 0) {
                        v16 acc = {0};
                        for (; k < C1; k += W) acc += load(vg + k);
                        sum = hsum(acc);
                    } else for (; k < C1; k++) sum += vg[k];
                    float mean = sum / C1;
                    if (C1 % W == 0) {
                        v16 acc = {0};
                        for (k = 0; k < C1; k += W) { v16 d = load(vg + k) - mean; acc += d * d; }
                        sq = hsum(acc);
                    } else for (k = 0; k < C1; k++) sq += (vg[k] - mean) * (vg[k] - mean);
                    float inv = 1.0f / __builtin_sqrtf(sq / C1 + eps);
                    if (C1 % W == 0)
                        for (k = 0; k < C1; k += W)
                            store(og + k, (load(vg + k) - mean) * inv * load(lnw + k) + load(lnb + k));
                    else for (k = 0; k < C1; k++) og[k] = (vg[k] - mean) * inv * lnw[k] + lnb[k];
                }
            }
}
