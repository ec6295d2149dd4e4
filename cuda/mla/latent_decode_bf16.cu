// The work-list MLA decode (latent_decode.cuh) for __nv_bfloat16 queries.
#include "mla/latent_decode_launch.cuh"

namespace cuattn {
template void run_mla_list<__nv_bfloat16>(const MlaLatentParams& p, cudaStream_t stream);
template bool mla_sm90_ready<__nv_bfloat16>(const MlaLatentParams& p, bool narrow);
}  // namespace cuattn
