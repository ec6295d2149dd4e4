// The work-list MLA decode (latent_decode.cuh) for __half queries.
#include "mla/latent_decode_launch.cuh"

namespace cuattn {
template void run_mla_list<__half>(const MlaLatentParams& p, cudaStream_t stream);
template bool mla_sm90_ready<__half>(const MlaLatentParams& p, bool narrow);
}  // namespace cuattn
