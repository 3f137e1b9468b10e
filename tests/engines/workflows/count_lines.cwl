# One step for cwl-tes: count the lines of a staged input file.
cwlVersion: v1.0
class: CommandLineTool
baseCommand: [wc, -l]
requirements:
  DockerRequirement:
    dockerPull: debian:bookworm-slim
inputs:
  text:
    type: File
    inputBinding: {position: 1}
stdout: count.txt
outputs:
  count:
    type: stdout
