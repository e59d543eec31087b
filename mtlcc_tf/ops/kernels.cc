// CPU kernels of mtlcc_tf (see __init__.py): the fused elementwise part of one step of the
// layer-normalised ConvLSTM cell, and reflect padding of the spatial axes with its gradient.
//
// One step of `mtlcc_tf.layers.ConvLSTMCell` with normalisation and no peepholes is two
// convolutions and then elementwise work: layer normalisation of the four gate pre-activations
// (each over height x width x filters, per-channel scale and offset), sigmoid/tanh, the cell
// update, layer normalisation of the new cell and h = o * tanh(c). As TensorFlow graph ops that
// is some thirty passes over gate-sized tensors forward and backward, each of them memory-bound;
// here it is three passes forward and three backward, one sample per thread.
//
// Layout: gates [batch, height, width, 4 * filters] (input, forget, candidate, output gates),
// cells [batch, height, width, filters]. Statistics are those of `layer_norm` in cells.py:
// sums in float per channel, then in double per group; variance E[x^2] - E[x]^2.

#include <cmath>
#include <cstring>
#include <vector>

#include "Eigen/Core"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace mtlcc {
namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

using Array = Eigen::ArrayXf;
using Map = Eigen::Map<Eigen::ArrayXf>;
using ConstMap = Eigen::Map<const Eigen::ArrayXf>;

// An InvalidArgument status whose message is the arguments concatenated.
template <typename... Args>
absl::Status InvalidArgument(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

constexpr int kGates = 4;
// Per sample: mean and inverse standard deviation of the four gates, then of the cell.
constexpr int kStats = 2 * (kGates + 1);

// Mean and inverse standard deviation of one group from its per-channel sums.
void GroupStatistics(const float* sums, const float* squares, int64_t channels, double count,
                     float epsilon, float* mean, float* inverse_std) {
  double sum = 0.0, square = 0.0;
  for (int64_t i = 0; i < channels; ++i) {
    sum += sums[i];
    square += squares[i];
  }
  const double m = sum / count;
  const double variance = std::max(square / count - m * m, 0.0);
  *mean = static_cast<float>(m);
  *inverse_std = static_cast<float>(1.0 / std::sqrt(variance + epsilon));
}

// Everything one sample needs: pointers into the inputs and outputs at that sample.
struct Dims {
  int64_t batch, pixels, filters;
  int64_t gates() const { return kGates * filters; }
};

// Shared checks: gates [b, h, w, 4f], cells [b, h, w, f], vectors of the right lengths.
absl::Status CheckShapes(const Tensor& gates, const Tensor& cell, const Tensor* gate_vectors[],
                               int num_gate_vectors, const Tensor* cell_vectors[],
                               int num_cell_vectors, Dims* dims) {
  if (gates.dims() != 4) {
    return InvalidArgument("gates must be [batch, height, width, 4 * filters], got ",
                           gates.shape().DebugString());
  }
  if (gates.dim_size(3) % kGates != 0) {
    return InvalidArgument("the channels of gates must be 4 * filters, got ", gates.dim_size(3));
  }
  dims->batch = gates.dim_size(0);
  dims->pixels = gates.dim_size(1) * gates.dim_size(2);
  dims->filters = gates.dim_size(3) / kGates;
  TensorShape cell_shape({gates.dim_size(0), gates.dim_size(1), gates.dim_size(2), dims->filters});
  if (cell.shape() != cell_shape) {
    return InvalidArgument("cells must be ", cell_shape.DebugString(), ", got ",
                           cell.shape().DebugString());
  }
  for (int i = 0; i < num_gate_vectors; ++i) {
    if (gate_vectors[i]->shape() != TensorShape({dims->gates()})) {
      return InvalidArgument("gate scale and offset must be [", dims->gates(), "], got ",
                             gate_vectors[i]->shape().DebugString());
    }
  }
  for (int i = 0; i < num_cell_vectors; ++i) {
    if (cell_vectors[i]->shape() != TensorShape({dims->filters})) {
      return InvalidArgument("cell scale and offset must be [", dims->filters, "], got ",
                             cell_vectors[i]->shape().DebugString());
    }
  }
  return absl::OkStatus();
}

void ForEachSample(OpKernelContext* context, const Dims& dims,
                   const std::function<void(int64_t)>& work) {
  const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
  // Cost per sample in rough cycles: a few dozen per element and pass.
  const int64_t cost = dims.pixels * dims.gates() * 60;
  tensorflow::Shard(workers.num_threads, workers.workers, dims.batch, cost,
                    [&work](int64_t start, int64_t limit) {
                      for (int64_t b = start; b < limit; ++b) work(b);
                    });
}

class LnLstmForwardOp : public OpKernel {
 public:
  explicit LnLstmForwardOp(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("epsilon", &epsilon_));
  }

  void Compute(OpKernelContext* context) override {
    const Tensor& gates = context->input(0);
    const Tensor& cell_prev = context->input(1);
    const Tensor* gate_vectors[] = {&context->input(2), &context->input(3)};
    const Tensor* cell_vectors[] = {&context->input(4), &context->input(5)};
    Dims dims;
    OP_REQUIRES_OK(context,
                   CheckShapes(gates, cell_prev, gate_vectors, 2, cell_vectors, 2, &dims));
    Tensor *hidden, *cell, *activations, *stats;
    OP_REQUIRES_OK(context, context->allocate_output(0, cell_prev.shape(), &hidden));
    OP_REQUIRES_OK(context, context->allocate_output(1, cell_prev.shape(), &cell));
    OP_REQUIRES_OK(context, context->allocate_output(2, gates.shape(), &activations));
    OP_REQUIRES_OK(context, context->allocate_output(3, TensorShape({dims.batch, kStats}), &stats));

    const float* gate_scale = context->input(2).flat<float>().data();
    const float* gate_offset = context->input(3).flat<float>().data();
    const float* cell_scale = context->input(4).flat<float>().data();
    const float* cell_offset = context->input(5).flat<float>().data();
    const int64_t p = dims.pixels, f = dims.filters, g = dims.gates();
    const float epsilon = epsilon_;

    ForEachSample(context, dims, [&](int64_t b) {
      const float* z = gates.flat<float>().data() + b * p * g;
      const float* c_prev = cell_prev.flat<float>().data() + b * p * f;
      float* act = activations->flat<float>().data() + b * p * g;
      float* h = hidden->flat<float>().data() + b * p * f;
      float* c = cell->flat<float>().data() + b * p * f;
      float* stat = stats->flat<float>().data() + b * kStats;

      // Pass 1: gate statistics.
      Array sums = Array::Zero(g), squares = Array::Zero(g);
      for (int64_t i = 0; i < p; ++i) {
        ConstMap zi(z + i * g, g);
        sums += zi;
        squares += zi.square();
      }
      Array factor(g), shift(g);
      for (int k = 0; k < kGates; ++k) {
        GroupStatistics(sums.data() + k * f, squares.data() + k * f, f, double(p * f), epsilon,
                        &stat[2 * k], &stat[2 * k + 1]);
        factor.segment(k * f, f) = stat[2 * k + 1] * ConstMap(gate_scale + k * f, f);
        shift.segment(k * f, f) =
            ConstMap(gate_offset + k * f, f) - stat[2 * k] * factor.segment(k * f, f);
      }
      // Pass 2: normalised gates, activations, raw new cell and its statistics.
      Array cell_sums = Array::Zero(f), cell_squares = Array::Zero(f);
      for (int64_t i = 0; i < p; ++i) {
        Map a(act + i * g, g);
        a = ConstMap(z + i * g, g) * factor + shift;
        a.head(2 * f) = a.head(2 * f).logistic();
        a.segment(2 * f, f) = a.segment(2 * f, f).tanh();
        a.tail(f) = a.tail(f).logistic();
        Map c_raw(c + i * f, f);
        c_raw = a.segment(f, f) * ConstMap(c_prev + i * f, f) + a.head(f) * a.segment(2 * f, f);
        cell_sums += c_raw;
        cell_squares += c_raw.square();
      }
      GroupStatistics(cell_sums.data(), cell_squares.data(), f, double(p * f), epsilon,
                      &stat[2 * kGates], &stat[2 * kGates + 1]);
      const Array cell_factor = stat[2 * kGates + 1] * ConstMap(cell_scale, f);
      const Array cell_shift = ConstMap(cell_offset, f) - stat[2 * kGates] * cell_factor;
      // Pass 3: normalised cell and hidden state.
      for (int64_t i = 0; i < p; ++i) {
        Map ci(c + i * f, f);
        ci = ci * cell_factor + cell_shift;
        Map(h + i * f, f) = ConstMap(act + i * g + 3 * f, f) * ci.tanh();
      }
    });
  }

 private:
  float epsilon_;
};

class LnLstmBackwardOp : public OpKernel {
 public:
  explicit LnLstmBackwardOp(OpKernelConstruction* context) : OpKernel(context) {}

  void Compute(OpKernelContext* context) override {
    const Tensor& grad_hidden = context->input(0);
    const Tensor& grad_cell = context->input(1);
    const Tensor& gates = context->input(2);
    const Tensor& cell_prev = context->input(3);
    const Tensor& activations = context->input(6);
    const Tensor& cell = context->input(7);
    const Tensor& stats = context->input(8);
    const Tensor* gate_vectors[] = {&context->input(4)};
    const Tensor* cell_vectors[] = {&context->input(5)};
    Dims dims;
    OP_REQUIRES_OK(context,
                   CheckShapes(gates, cell_prev, gate_vectors, 1, cell_vectors, 1, &dims));
    for (const Tensor* t : {&grad_hidden, &grad_cell, &cell}) {
      OP_REQUIRES(context, t->shape() == cell_prev.shape(),
                  InvalidArgument("expected ", cell_prev.shape().DebugString(), ", got ",
                                  t->shape().DebugString()));
    }
    OP_REQUIRES(context, activations.shape() == gates.shape(),
                InvalidArgument("activations must be shaped like gates"));
    OP_REQUIRES(context, stats.shape() == TensorShape({dims.batch, kStats}),
                InvalidArgument("stats must be [batch, ", kStats, "]"));

    const int64_t n = dims.batch, p = dims.pixels, f = dims.filters, g = dims.gates();
    Tensor *grad_gates, *grad_cell_prev, *grad_gate_scale, *grad_gate_offset, *grad_cell_scale,
        *grad_cell_offset;
    OP_REQUIRES_OK(context, context->allocate_output(0, gates.shape(), &grad_gates));
    OP_REQUIRES_OK(context, context->allocate_output(1, cell_prev.shape(), &grad_cell_prev));
    OP_REQUIRES_OK(context, context->allocate_output(2, TensorShape({g}), &grad_gate_scale));
    OP_REQUIRES_OK(context, context->allocate_output(3, TensorShape({g}), &grad_gate_offset));
    OP_REQUIRES_OK(context, context->allocate_output(4, TensorShape({f}), &grad_cell_scale));
    OP_REQUIRES_OK(context, context->allocate_output(5, TensorShape({f}), &grad_cell_offset));

    // Per-sample partial sums of the scale and offset gradients, added up at the end.
    std::vector<float> partial_gate(2 * n * g), partial_cell(2 * n * f);
    const ConstMap gate_scale(context->input(4).flat<float>().data(), g);
    const ConstMap cell_scale(context->input(5).flat<float>().data(), f);

    ForEachSample(context, dims, [&](int64_t b) {
      const float* dh = grad_hidden.flat<float>().data() + b * p * f;
      const float* dc_next = grad_cell.flat<float>().data() + b * p * f;
      const float* z = gates.flat<float>().data() + b * p * g;
      const float* c_prev = cell_prev.flat<float>().data() + b * p * f;
      const float* act = activations.flat<float>().data() + b * p * g;
      const float* c = cell.flat<float>().data() + b * p * f;
      const float* stat = stats.flat<float>().data() + b * kStats;
      float* dz = grad_gates->flat<float>().data() + b * p * g;
      float* dc_prev = grad_cell_prev->flat<float>().data() + b * p * f;
      Map d_gate_scale(partial_gate.data() + b * g, g);
      Map d_gate_offset(partial_gate.data() + (n + b) * g, g);
      Map d_cell_scale(partial_cell.data() + b * f, f);
      Map d_cell_offset(partial_cell.data() + (n + b) * f, f);
      d_gate_scale.setZero();
      d_gate_offset.setZero();
      d_cell_scale.setZero();
      d_cell_offset.setZero();

      // zhat = z * z_factor + z_shift per channel: the normalised gates before scale/offset.
      Array z_factor(g), z_shift(g);
      for (int k = 0; k < kGates; ++k) {
        z_factor.segment(k * f, f).setConstant(stat[2 * k + 1]);
        z_shift.segment(k * f, f).setConstant(-stat[2 * k] * stat[2 * k + 1]);
      }
      const float cell_mean = stat[2 * kGates], cell_inverse_std = stat[2 * kGates + 1];
      // Per-channel sums of dxhat and dxhat * xhat, for the cell and the gates.
      Array cell_sum1 = Array::Zero(f), cell_sum2 = Array::Zero(f);
      Array gate_sum1 = Array::Zero(g), gate_sum2 = Array::Zero(g);
      // Per-pixel temporaries, allocated once per sample rather than once per pixel.
      Array t(f), c_hat(f), dc_hat(f), do_n(f), z_hat(3 * f);

      // Pass A: gradient into the normalised cell (kept in dc_prev for now) and the output gate.
      for (int64_t i = 0; i < p; ++i) {
        ConstMap a(act + i * g, g), dhi(dh + i * f, f);
        t = ConstMap(c + i * f, f).tanh();
        const auto o = a.tail(f);
        Map dct(dc_prev + i * f, f);
        dct = ConstMap(dc_next + i * f, f) + dhi * o * (1.0f - t.square());
        c_hat = (a.segment(f, f) * ConstMap(c_prev + i * f, f) + a.head(f) * a.segment(2 * f, f) -
                 cell_mean) *
                cell_inverse_std;
        d_cell_scale += dct * c_hat;
        d_cell_offset += dct;
        dc_hat = dct * cell_scale;
        cell_sum1 += dc_hat;
        cell_sum2 += dc_hat * c_hat;

        do_n = dhi * t * o * (1.0f - o);
        auto zo_hat = z_hat.head(f);
        zo_hat = ConstMap(z + i * g + 3 * f, f) * z_factor.tail(f) + z_shift.tail(f);
        d_gate_scale.tail(f) += do_n * zo_hat;
        d_gate_offset.tail(f) += do_n;
        Map dzo_hat(dz + i * g + 3 * f, f);
        dzo_hat = do_n * gate_scale.tail(f);
        gate_sum1.tail(f) += dzo_hat;
        gate_sum2.tail(f) += dzo_hat * zo_hat;
      }
      const double count = double(p * f);
      const float cell_mean1 = float(cell_sum1.cast<double>().sum() / count);
      const float cell_mean2 = float(cell_sum2.cast<double>().sum() / count);

      // Pass B: through the cell's normalisation to c_prev and the input, forget, candidate.
      for (int64_t i = 0; i < p; ++i) {
        ConstMap a(act + i * g, g), cpi(c_prev + i * f, f);
        const auto in = a.head(f), fg = a.segment(f, f), cand = a.segment(2 * f, f);
        c_hat = (fg * cpi + in * cand - cell_mean) * cell_inverse_std;
        Map dci(dc_prev + i * f, f);
        Array& dc_raw = dc_hat;  // the gradient into the raw cell, in dc_hat's memory
        dc_raw = cell_inverse_std * (dci * cell_scale - cell_mean1 - c_hat * cell_mean2);
        dci = dc_raw * fg;
        Map dzi(dz + i * g, 3 * f);
        dzi.head(f) = dc_raw * cand * in * (1.0f - in);
        dzi.segment(f, f) = dc_raw * cpi * fg * (1.0f - fg);
        dzi.tail(f) = dc_raw * in * (1.0f - cand.square());
        z_hat = ConstMap(z + i * g, 3 * f) * z_factor.head(3 * f) + z_shift.head(3 * f);
        d_gate_scale.head(3 * f) += dzi * z_hat;
        d_gate_offset.head(3 * f) += dzi;
        dzi *= gate_scale.head(3 * f);
        gate_sum1.head(3 * f) += dzi;
        gate_sum2.head(3 * f) += dzi * z_hat;
      }
      // dz = s * (dzhat - mean(dzhat) - zhat * mean(dzhat * zhat)), zhat = (z - m) * s,
      // as dzhat * alpha + z * beta + gamma per channel.
      Array alpha(g), beta(g), gamma(g);
      for (int k = 0; k < kGates; ++k) {
        const float mean = stat[2 * k], s = stat[2 * k + 1];
        const float mean1 = float(gate_sum1.segment(k * f, f).cast<double>().sum() / count);
        const float mean2 = float(gate_sum2.segment(k * f, f).cast<double>().sum() / count);
        alpha.segment(k * f, f).setConstant(s);
        beta.segment(k * f, f).setConstant(-s * s * mean2);
        gamma.segment(k * f, f).setConstant(-s * mean1 + mean * s * s * mean2);
      }
      // Pass C: through the gates' normalisation.
      for (int64_t i = 0; i < p; ++i) {
        Map dzi(dz + i * g, g);
        dzi = dzi * alpha + ConstMap(z + i * g, g) * beta + gamma;
      }
    });

    Map(grad_gate_scale->flat<float>().data(), g) = Array::Zero(g);
    Map(grad_gate_offset->flat<float>().data(), g) = Array::Zero(g);
    Map(grad_cell_scale->flat<float>().data(), f) = Array::Zero(f);
    Map(grad_cell_offset->flat<float>().data(), f) = Array::Zero(f);
    for (int64_t b = 0; b < n; ++b) {
      Map(grad_gate_scale->flat<float>().data(), g) += ConstMap(partial_gate.data() + b * g, g);
      Map(grad_gate_offset->flat<float>().data(), g) +=
          ConstMap(partial_gate.data() + (n + b) * g, g);
      Map(grad_cell_scale->flat<float>().data(), f) += ConstMap(partial_cell.data() + b * f, f);
      Map(grad_cell_offset->flat<float>().data(), f) +=
          ConstMap(partial_cell.data() + (n + b) * f, f);
    }
  }
};

// Index of padded position `i` (border `b`) in an axis of `n` > b pixels, reflected as
// tf.pad(mode="REFLECT"): -1 -> 1, n -> n - 2.
inline int64_t Reflect(int64_t i, int64_t b, int64_t n) {
  i -= b;
  if (i < 0) return -i;
  if (i >= n) return 2 * (n - 1) - i;
  return i;
}

// The padding ops' shared attribute: pixels added on each side of height and width.
class BorderOpKernel : public OpKernel {
 public:
  explicit BorderOpKernel(OpKernelConstruction* context) : OpKernel(context) {
    OP_REQUIRES_OK(context, context->GetAttr("border", &border_));
  }

 protected:
  int border_;
};

// [batch, height, width, channels] -> [batch, height + 2b, width + 2b, channels].
class ReflectPadOp : public BorderOpKernel {
 public:
  using BorderOpKernel::BorderOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& input = context->input(0);
    OP_REQUIRES(context, input.dims() == 4,
                InvalidArgument("reflect padding needs [batch, height, width, channels], got ",
                                input.shape().DebugString()));
    const int64_t n = input.dim_size(0), h = input.dim_size(1), w = input.dim_size(2);
    const int64_t c = input.dim_size(3), b = border_;
    OP_REQUIRES(context, h > b && w > b,
                InvalidArgument("reflect padding by ", b, " needs height and width above ", b,
                                ", got ", input.shape().DebugString()));
    const int64_t ph = h + 2 * b, pw = w + 2 * b;
    Tensor* output;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n, ph, pw, c}), &output));
    const float* x = input.flat<float>().data();
    float* y = output->flat<float>().data();
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    // One unit: one padded row of one sample.
    tensorflow::Shard(workers.num_threads, workers.workers, n * ph, pw * c * 2,
                      [&](int64_t start, int64_t limit) {
                        for (int64_t unit = start; unit < limit; ++unit) {
                          const int64_t sample = unit / ph, row = unit % ph;
                          const float* source = x + (sample * h + Reflect(row, b, h)) * w * c;
                          float* target = y + unit * pw * c;
                          std::memcpy(target + b * c, source, w * c * sizeof(float));
                          for (int64_t i = 0; i < b; ++i) {
                            std::memcpy(target + i * c, source + Reflect(i, b, w) * c,
                                        c * sizeof(float));
                            const int64_t j = pw - 1 - i;
                            std::memcpy(target + j * c, source + Reflect(j, b, w) * c,
                                        c * sizeof(float));
                          }
                        }
                      });
  }
};

// Gradient of ReflectPad: every padded pixel's gradient is added to the pixel it copies.
class ReflectPadGradOp : public BorderOpKernel {
 public:
  using BorderOpKernel::BorderOpKernel;

  void Compute(OpKernelContext* context) override {
    const Tensor& grad = context->input(0);
    const int64_t b = border_;
    OP_REQUIRES(context, grad.dims() == 4 && grad.dim_size(1) > 3 * b && grad.dim_size(2) > 3 * b,
                InvalidArgument("the gradient of reflect padding by ", b,
                                " must be [batch, height + 2b, width + 2b, channels], got ",
                                grad.shape().DebugString()));
    const int64_t n = grad.dim_size(0), ph = grad.dim_size(1), pw = grad.dim_size(2);
    const int64_t c = grad.dim_size(3), h = ph - 2 * b, w = pw - 2 * b;
    Tensor* output;
    OP_REQUIRES_OK(context, context->allocate_output(0, TensorShape({n, h, w, c}), &output));
    const float* dy = grad.flat<float>().data();
    float* dx = output->flat<float>().data();
    const auto& workers = *context->device()->tensorflow_cpu_worker_threads();
    // One unit: one sample (border rows add into rows of other shards of the same sample).
    const int64_t cost = ph * pw * c * 3;
    tensorflow::Shard(
        workers.num_threads, workers.workers, n, cost, [&](int64_t start, int64_t limit) {
          for (int64_t sample = start; sample < limit; ++sample) {
            const float* source = dy + sample * ph * pw * c;
            float* target = dx + sample * h * w * c;
            for (int64_t row = 0; row < h; ++row) {
              std::memcpy(target + row * w * c, source + ((row + b) * pw + b) * c,
                          w * c * sizeof(float));
            }
            for (int64_t row = 0; row < ph; ++row) {
              const bool border_row = row < b || row >= h + b;
              float* target_row = target + Reflect(row, b, h) * w * c;
              for (int64_t column = 0; column < pw; ++column) {
                if (!border_row && column >= b && column < w + b) continue;
                Map(target_row + Reflect(column, b, w) * c, c) +=
                    ConstMap(source + (row * pw + column) * c, c);
              }
            }
          }
        });
  }
};

absl::Status SameAs(InferenceContext* c, int input, std::initializer_list<int> outputs) {
  for (int output : outputs) c->set_output(output, c->input(input));
  return absl::OkStatus();
}

// Shape function of the padding ops: height and width grow (`pad`) or shrink by 2 * border.
absl::Status PaddedShape(InferenceContext* c, bool pad) {
  ShapeHandle input;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
  int border;
  TF_RETURN_IF_ERROR(c->GetAttr("border", &border));
  tensorflow::shape_inference::DimensionHandle size[2];
  for (int axis : {1, 2}) {
    auto dim = c->Dim(input, axis);
    TF_RETURN_IF_ERROR(pad ? c->Add(dim, 2 * border, &size[axis - 1])
                           : c->Subtract(dim, 2 * border, &size[axis - 1]));
  }
  c->set_output(0, c->MakeShape({c->Dim(input, 0), size[0], size[1], c->Dim(input, 3)}));
  return absl::OkStatus();
}

}  // namespace

REGISTER_OP("MtlccLnLstmForward")
    .Input("gates: float")
    .Input("cell_prev: float")
    .Input("gate_scale: float")
    .Input("gate_offset: float")
    .Input("cell_scale: float")
    .Input("cell_offset: float")
    .Attr("epsilon: float")
    .Output("hidden: float")
    .Output("cell: float")
    .Output("activations: float")
    .Output("stats: float")
    .SetShapeFn([](InferenceContext* c) {
      SameAs(c, 1, {0, 1}).IgnoreError();
      c->set_output(2, c->input(0));
      c->set_output(3, c->Matrix(c->Dim(c->input(0), 0), kStats));
      return absl::OkStatus();
    })
    .Doc("One layer-normalised ConvLSTM step after its convolutions (mtlcc_tf.ops).");

REGISTER_OP("MtlccLnLstmBackward")
    .Input("grad_hidden: float")
    .Input("grad_cell: float")
    .Input("gates: float")
    .Input("cell_prev: float")
    .Input("gate_scale: float")
    .Input("cell_scale: float")
    .Input("activations: float")
    .Input("cell: float")
    .Input("stats: float")
    .Output("grad_gates: float")
    .Output("grad_cell_prev: float")
    .Output("grad_gate_scale: float")
    .Output("grad_gate_offset: float")
    .Output("grad_cell_scale: float")
    .Output("grad_cell_offset: float")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(2));
      c->set_output(1, c->input(3));
      c->set_output(2, c->input(4));
      c->set_output(3, c->input(4));
      c->set_output(4, c->input(5));
      c->set_output(5, c->input(5));
      return absl::OkStatus();
    })
    .Doc("Gradient of MtlccLnLstmForward.");

REGISTER_OP("MtlccReflectPad")
    .Input("input: float")
    .Attr("border: int >= 1")
    .Output("output: float")
    .SetShapeFn([](InferenceContext* c) { return PaddedShape(c, true); })
    .Doc("tf.pad(input, border on height and width, mode='REFLECT') (mtlcc_tf.ops).");

REGISTER_OP("MtlccReflectPadGrad")
    .Input("grad: float")
    .Attr("border: int >= 1")
    .Output("output: float")
    .SetShapeFn([](InferenceContext* c) { return PaddedShape(c, false); })
    .Doc("Gradient of MtlccReflectPad.");

REGISTER_KERNEL_BUILDER(Name("MtlccReflectPad").Device(tensorflow::DEVICE_CPU), ReflectPadOp);
REGISTER_KERNEL_BUILDER(Name("MtlccReflectPadGrad").Device(tensorflow::DEVICE_CPU),
                        ReflectPadGradOp);
REGISTER_KERNEL_BUILDER(Name("MtlccLnLstmForward").Device(tensorflow::DEVICE_CPU),
                        LnLstmForwardOp);
REGISTER_KERNEL_BUILDER(Name("MtlccLnLstmBackward").Device(tensorflow::DEVICE_CPU),
                        LnLstmBackwardOp);

}  // namespace mtlcc
