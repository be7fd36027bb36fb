"""fnl-eval: GPS / GPSm / box / mask AP evaluation of DensePose results on pycocotools' COCOeval, body surfaces, benchmarks."""
