// RUN: kiln-opt %s --kiln-verify-model --split-input-file --verify-diagnostics

// expected-error @+1 {{argument #0 of @forward needs a kiln.name attribute}}
func.func @forward(%x: tensor<4xf32>) -> (tensor<4xf32> {kiln.name = "y"}) {
  return %x : tensor<4xf32>
}

// -----

// expected-error @+1 {{result #0: the name 'x' is used twice}}
func.func @forward(%x: tensor<4xf32> {kiln.name = "x"}) -> (tensor<4xf32> {kiln.name = "x"}) {
  return %x : tensor<4xf32>
}

// -----

// expected-error @+1 {{a Kiln model needs a func.func @forward}}
module {
}

// -----

// expected-error @+1 {{unexpected function 'helper': a Kiln model has @forward and optionally @extend and @decode}}
func.func @helper() {
  return
}
