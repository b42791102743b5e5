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
/* Mask logits from the upscaler's sub-pixel order to the image's: src (B, M, rows, gw, 4, 4) with
 * sub-pixel (a, b) = (s >> 1, s & 1) and sub-sub-pixel (a', b') likewise goes to
 * out (B, M, H4, W4) at (4 (y0 + y) + 2a + a', 4x + 2b + b'). */
void unshuffle_masks(const float *src, int B, int M, int rows, int gw, float *out, int H4, int W4, int y0) {
    for (int64_t bm = 0; bm < (int64_t)B * M; bm++)
        for (int y = 0; y < rows; y++)
            for (int a = 0; a < 2; a++)
                for (int a2 = 0; a2 < 2; a2++) {
                    float *dst = out + (bm * H4 + 4 * (int64_t)(y0 + y) + 2 * a + a2) * W4;
                    const float *s = src + ((bm * rows + y) * gw) * 16;
                    for (int x = 0; x < gw; x++, s += 16) {
                        dst[4 * x + 0] = s[(2 * a) * 4 + 2 * a2];
                        dst[4 * x + 1] = s[(2 * a) * 4 + 2 * a2 + 1];
                        dst[4 * x + 2] = s[(2 * a + 1) * 4 + 2 * a2];
                        dst[4 * x + 3] = s[(2 * a + 1) * 4 + 2 * a2 + 1];
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
