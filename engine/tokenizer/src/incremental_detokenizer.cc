#include "macserve/tokenizer/tokenizer.h"
