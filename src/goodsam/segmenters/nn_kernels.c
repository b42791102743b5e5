/* Fused CPU loops for ESPNetv2's training backward (goodsam/segmenters/fused.py loads this through
 * goodsam/native.py).
 *
 * PyTorch's CPU backward of PReLU writes a per-element weight gradient and sums it afterwards, and its
 * bilinear upsampling backward scatters four weighted terms per output pixel; these loops do each in one
 * pass over the output gradient. The formulas are the same in float32, summed in another order, so the
 * results agree with PyTorch's up to float rounding. Arrays are float32 and C-contiguous (NCHW);
 * single-threaded (the trainer runs one process per core). Written with GCC/Clang vector extensions
 * (16 floats), which compile to AVX-512, AVX2 or SSE depending on the machine.
 */
#include <stdint.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#define W 16 /* floats per vector */

static inline v16 load(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, v16 v) { memcpy(p, &v, sizeof v); }
static inline v16 splat(float x) { return (v16){0} + x; }

/* PReLU y = x (x > 0), a_c x (else) backward on (planes = N*C, plane = H*W) arrays, channel c = p % C:
 * grad_x = g (x > 0), a_c g (else); grad_a[c] += sum over the plane of x g where x <= 0 (in double;
 * grad_a zeroed by the caller). */
void prelu_backward(const float *x, const float *g, const float *a, float *grad_x, double *grad_a,
                    int64_t planes, int64_t channels, int64_t plane) {
    for (int64_t p = 0; p < planes; p++) {
        const float slope = a[p % channels];
        const float *xp = x + p * plane, *gp = g + p * plane;
        float *out = grad_x + p * plane;
        const v16 vslope = splat(slope);
        v16 acc = splat(0.0f);
        int64_t i = 0;
        for (; i + W <= plane; i += W) {
            const v16 xv = load(xp + i), gv = load(gp + i);
            const v16i positive = xv > 0.0f;
            store(out + i, (v16)(((v16i)gv & positive) | ((v16i)(gv * vslope) & ~positive)));
            acc += (v16)((v16i)(xv * gv) & ~positive);
        }
        double sum = 0.0;
        for (; i < plane; i++) {
            if (xp[i] > 0.0f) {
                out[i] = gp[i];
            } else {
                out[i] = slope * gp[i];
                sum += (double)(xp[i] * gp[i]);
            }
        }
        for (int k = 0; k < W; k++) sum += acc[k];
        grad_a[p % channels] += sum;
    }
}

/* Bilinear upsampling backward, separable: grad (planes, out_h, out_w) -> grad_in (planes, in_h, in_w).
 * Output row o reads input rows row0[o], row1[o] with weights 1 - row_w[o], row_w[o]; output column j
 * reads columns col0[j], col1[j] with 1 - col_w[j], col_w[j]. Each output row is first folded onto
 * the input columns (tmp, in_w floats), then added to its two input rows. grad_in is overwritten. */
void upsample_bilinear_backward(const float *grad, float *grad_in, int64_t planes, int64_t out_h,
                                int64_t out_w, int64_t in_h, int64_t in_w, const int64_t *row0,
                                const int64_t *row1, const float *row_w, const int64_t *col0,
                                const int64_t *col1, const float *col_w, float *tmp) {
    memset(grad_in, 0, sizeof(float) * (size_t)(planes * in_h * in_w));
    for (int64_t p = 0; p < planes; p++) {
        const float *gp = grad + p * out_h * out_w;
        float *out = grad_in + p * in_h * in_w;
        for (int64_t o = 0; o < out_h; o++) {
            memset(tmp, 0, sizeof(float) * (size_t)in_w);
            const float *row = gp + o * out_w;
            for (int64_t j = 0; j < out_w; j++) {
                const float v = row[j], w1 = col_w[j];
                tmp[col0[j]] += (1.0f - w1) * v;
                tmp[col1[j]] += w1 * v;
            }
            const float w1 = row_w[o], w0 = 1.0f - w1;
            float *r0 = out + row0[o] * in_w, *r1 = out + row1[o] * in_w;
            for (int64_t j = 0; j < in_w; j++) r0[j] += w0 * tmp[j];
            for (int64_t j = 0; j < in_w; j++) r1[j] += w1 * tmp[j];
        }
    }
}

/* A frozen batch norm (per channel y = x s_c + b_c) followed by PReLU (slope a_c), forward:
 * out = t (t > 0), a_c t (else) with t = x s_c + b_c; planes = N*C of plane = H*W floats. */
void norm_prelu_forward(const float *x, const float *scale, const float *shift, const float *slope,
                        float *out, int64_t planes, int64_t channels, int64_t plane) {
    for (int64_t p = 0; p < planes; p++) {
        const int64_t c = p % channels;
        const float s = scale[c], b = shift[c], a = slope[c];
        const float *xp = x + p * plane;
        float *op = out + p * plane;
        const v16 vs = splat(s), vb = splat(b), va = splat(a);
        int64_t i = 0;
        for (; i + W <= plane; i += W) {
            const v16 t = load(xp + i) * vs + vb;
            const v16i positive = t > 0.0f;
            store(op + i, (v16)(((v16i)t & positive) | ((v16i)(t * va) & ~positive)));
        }
        for (; i < plane; i++) {
            const float t = xp[i] * s + b;
            op[i] = t > 0.0f ? t : a * t;
        }
    }
}

/* Its backward: with g' = g (t > 0), a_c g (else): grad_x = g' s_c; grad_scale[c] += sum g' x,
 * grad_shift[c] += sum g', grad_slope[c] += sum t g where t <= 0 (sums in double, zeroed by the caller). */
void norm_prelu_backward(const float *x, const float *g, const float *scale, const float *shift,
                         const float *slope, float *grad_x, double *grad_scale, double *grad_shift,
                         double *grad_slope, int64_t planes, int64_t channels, int64_t plane) {
    for (int64_t p = 0; p < planes; p++) {
        const int64_t c = p % channels;
        const float s = scale[c], b = shift[c], a = slope[c];
        const float *xp = x + p * plane, *gp = g + p * plane;
        float *op = grad_x + p * plane;
        const v16 vs = splat(s), vb = splat(b), va = splat(a);
        v16 acc_scale = splat(0.0f), acc_shift = splat(0.0f), acc_slope = splat(0.0f);
        int64_t i = 0;
        for (; i + W <= plane; i += W) {
            const v16 xv = load(xp + i), gv = load(gp + i);
            const v16 t = xv * vs + vb;
            const v16i positive = t > 0.0f;
            const v16 gd = (v16)(((v16i)gv & positive) | ((v16i)(gv * va) & ~positive));
            store(op + i, gd * vs);
            acc_scale += gd * xv;
            acc_shift += gd;
            acc_slope += (v16)((v16i)(t * gv) & ~positive);
        }
        double sum_scale = 0.0, sum_shift = 0.0, sum_slope = 0.0;
        for (; i < plane; i++) {
            const float t = xp[i] * s + b;
            const float gd = t > 0.0f ? gp[i] : a * gp[i];
            op[i] = gd * s;
            sum_scale += (double)(gd * xp[i]);
            sum_shift += (double)gd;
            if (!(t > 0.0f)) sum_slope += (double)(t * gp[i]);
        }
        for (int k = 0; k < W; k++) {
            sum_scale += acc_scale[k];
            sum_shift += acc_shift[k];
            sum_slope += acc_slope[k];
        }
        grad_scale[c] += sum_scale;
        grad_shift[c] += sum_shift;
        grad_slope[c] += sum_slope;
    }
}

/* The same two loops for channels-last (NHWC) arrays of n floats, where the channel of element i is
 * i % C: the per-channel scale, shift and slope come as patterns of period L = lcm(C, 16) floats, and
 * the backward's sums are kept per pattern position (acc_*: L doubles each, zeroed by the caller; the
 * caller folds position j into channel j % C). n is a multiple of C. */
void norm_prelu_forward_nhwc(const float *x, const float *scale, const float *shift, const float *slope,
                             float *out, int64_t n, int64_t period) {
    int64_t i = 0;
    for (; i + W <= n; i += W) {
        const int64_t k = i % period;
        const v16 t = load(x + i) * load(scale + k) + load(shift + k);
        const v16i positive = t > 0.0f;
        store(out + i, (v16)(((v16i)t & positive) | ((v16i)(t * load(slope + k)) & ~positive)));
    }
    for (; i < n; i++) {
        const int64_t k = i % period;
        const float t = x[i] * scale[k] + shift[k];
        out[i] = t > 0.0f ? t : slope[k] * t;
    }
}

#define FLUSH 4096 /* floats summed per pattern position in float before adding to the double sums */

void norm_prelu_backward_nhwc(const float *x, const float *g, const float *scale, const float *shift,
                              const float *slope, float *grad_x, double *acc_scale, double *acc_shift,
                              double *acc_slope, int64_t n, int64_t period) {
    float part_scale[256], part_shift[256], part_slope[256]; /* period <= 256 (checked by the caller) */
    int64_t i = 0;
    while (i < n) {
        memset(part_scale, 0, sizeof part_scale);
        memset(part_shift, 0, sizeof part_shift);
        memset(part_slope, 0, sizeof part_slope);
        const int64_t block_end = (n - i > FLUSH * period) ? i + FLUSH * period : n;
        for (; i + W <= block_end; i += W) {
            const int64_t k = i % period;
            const v16 xv = load(x + i), gv = load(g + i), s = load(scale + k);
            const v16 t = xv * s + load(shift + k);
            const v16i positive = t > 0.0f;
            const v16 gd = (v16)(((v16i)gv & positive) | ((v16i)(gv * load(slope + k)) & ~positive));
            store(grad_x + i, gd * s);
            store(part_scale + k, load(part_scale + k) + gd * xv);
            store(part_shift + k, load(part_shift + k) + gd);
            store(part_slope + k, load(part_slope + k) + (v16)((v16i)(t * gv) & ~positive));
        }
        for (; i < block_end; i++) {
            const int64_t k = i % period;
            const float t = x[i] * scale[k] + shift[k];
            const float gd = t > 0.0f ? g[i] : slope[k] * g[i];
            grad_x[i] = gd * scale[k];
            part_scale[k] += gd * x[i];
            part_shift[k] += gd;
            if (!(t > 0.0f)) part_slope[k] += t * g[i];
        }
        for (int64_t k = 0; k < period; k++) {
            acc_scale[k] += part_scale[k];
            acc_shift[k] += part_shift[k];
            acc_slope[k] += part_slope[k];
        }
    }
}
