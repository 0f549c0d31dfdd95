#ifndef KILN_ATTRS_TD
#define KILN_ATTRS_TD

include "kiln/IR/KilnDialect.td"
include "mlir/IR/AttrTypeBase.td"

def Kiln_BlockQuantAttr : AttrDef<Kiln_Dialect, "BlockQuant"> {
  let mnemonic = "block_quant";
  let summary = "Block quantization: element type, block shapes, scale layout";
  let description = [{
    DeepSeek-V3's FP8 scheme. Weights are stored in `elementType` (e4m3) in
    `weight_block` blocks ([128, 128]) with one fp32 scale per block, laid out
    as [ceil(out / 128), ceil(in / 128)] (the checkpoints' `weight_scale_inv`):
    `w ~= q * scale`. Activations are quantized dynamically in
    [1, `act_block`] tiles along K: `s = max(amax, 1e-4) / 448`, values
    rounded to nearest-even and saturated at 448, scales laid out as
    [rows, ceil(K / act_block)]. GEMMs accumulate e4m3 products in fp32 and
    apply both scales per K block.

    ```mlir
    #kiln.block_quant<f8E4M3FN, weight = [128, 128], act = 128>
    ```
  }];
  let parameters = (ins "mlir::Type":$elementType,
                        ArrayRefParameter<"int64_t">:$weightBlock,
                        "int64_t":$actBlock);
  let assemblyFormat = "`<` $elementType `,` `weight` `=` `[` $weightBlock `]` `,` `act` `=` $actBlock `>`";
}

#endif // KILN_ATTRS_TD
